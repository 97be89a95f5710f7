"""Crash safety and multi-process safety of the local store, with real processes.

The SIGKILL loop runs in one clean child interpreter that forks writers (forking the
pytest process itself could inherit other tests' threads and their locks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resilience.checkpoint import SqliteCheckpointStore, StateCheckpointManager

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")


def run_python(code: str, *args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


WRITER = """
import os, sys, time
from resilience.checkpoint import SqliteCheckpointStore, StateCheckpointManager
directory, writer, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = SqliteCheckpointStore(directory) if sys.argv[5] == "sqlite" else None
manager = StateCheckpointManager(directory, store=store)
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(count):
    manager.save_checkpoint({"writer": writer, "i": i}, f"writer-{writer}", "shared", {"i": i})
"""


def manager_for(directory: Path, kind: str) -> StateCheckpointManager:
    store = SqliteCheckpointStore(directory) if kind == "sqlite" else None
    return StateCheckpointManager(directory, store=store)


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_four_writer_processes_lose_no_index_entries(tmp_path: Path, kind: str) -> None:
    directory, go = tmp_path / "ck", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(w), "25", str(go), kind],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    try:
        time.sleep(0.3)  # let the interpreters start so the writes overlap
        go.touch()
        errors = [proc.communicate(timeout=60)[1].decode() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], errors
    manager = manager_for(directory, kind)
    listed = manager.list_checkpoints(workflow_id="shared")
    assert len(listed) == 100
    assert len({info["checkpoint_id"] for info in listed}) == 100
    for w in range(4):
        mine = manager.list_checkpoints(agent_id=f"writer-{w}")
        assert [info["metadata"]["i"] for info in mine] == list(range(24, -1, -1))
        for info in mine:
            state = manager.load_checkpoint(info["checkpoint_id"])
            assert state == {"writer": w, "i": info["metadata"]["i"]}
    assert manager.rebuild_index().indexed == 100


KILLER = """
import json, os, random, signal, sys, time
from resilience.checkpoint import SqliteCheckpointStore, StateCheckpointManager
directory, kills, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def make(**options):
    store = SqliteCheckpointStore(directory) if kind == "sqlite" else None
    return StateCheckpointManager(directory, store=store, **options)
rng = random.Random(1234)
state = {"messages": [{"role": "user", "content": "x" * 200, "n": n} for n in range(150)],
         "numbers": [n * 0.5 for n in range(2000)]}
observer = make()
checked = set()
latest_checked = 0
for round_ in range(kills):
    pid = os.fork()
    if pid == 0:
        try:
            codec = rng.choice(["zstd", "gzip", "none"])
            writer = make(compression=codec)
            n = 0
            while True:
                n += 1
                writer.save_checkpoint(dict(state, round=round_, n=n), "agent", f"w{n % 3}")
        finally:
            os._exit(1)
    time.sleep(rng.uniform(0.0, 0.03))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    # After every kill: the newest indexed checkpoint loads, and so does each new one.
    latest = observer.get_latest_checkpoint()
    if latest is not None:
        observer.load_checkpoint(latest)
        latest_checked += 1
    for info in observer.list_checkpoints():
        if info["checkpoint_id"] not in checked:
            assert observer.verify_checkpoint(info["checkpoint_id"]), info
            checked.add(info["checkpoint_id"])
print(json.dumps({"kills": kills, "latest_checked": latest_checked, "checked": len(checked)}))
"""


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_sigkilled_writers_never_leave_a_listed_checkpoint_unloadable(
    tmp_path: Path, kind: str
) -> None:
    directory = tmp_path / "ck"
    started = time.monotonic()
    report = json.loads(run_python(KILLER, str(directory), "100", kind))
    assert report["kills"] == 100
    assert report["checked"] > 0
    manager = manager_for(directory, kind)
    listed = manager.list_checkpoints()
    assert len(listed) == report["checked"]
    for info in listed:
        assert manager.verify_checkpoint(info["checkpoint_id"])
        state = manager.load_checkpoint(info["checkpoint_id"])
        assert state["messages"][149]["n"] == 149
    latest = manager.get_latest_checkpoint()
    assert latest is not None
    assert manager.load_checkpoint(latest)["n"] >= 1
    # Orphan blobs (killed between blob and index) are complete and get indexed back.
    result = manager.rebuild_index()
    assert result.corrupted == ()
    assert result.indexed >= len(listed)
    assert time.monotonic() - started < 20


FORKED = """
import os, sys
from resilience.checkpoint import StateCheckpointManager
manager = StateCheckpointManager(sys.argv[1])
manager.save_checkpoint({"who": "parent"}, "a", "w")
pid = os.fork()
if pid == 0:
    code = 1
    try:
        manager.save_checkpoint({"who": "child"}, "a", "w")  # reconnects, no shared handle
        manager.close()
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
manager.save_checkpoint({"who": "parent again"}, "a", "w")
states = [manager.load_checkpoint(i["checkpoint_id"]) for i in manager.list_checkpoints()]
print([s["who"] for s in states])
"""


def test_a_manager_inherited_through_fork_keeps_working_in_both_processes(
    tmp_path: Path,
) -> None:
    out = run_python(FORKED, str(tmp_path / "ck"))
    assert out.strip() == "['parent again', 'child', 'parent']"
