"""Checkpoint time travel: diffing two ~1 MB states, the timeline of 10,000 checkpoints.

The diff table puts ``diff_states`` (equal subtrees pruned, then deepdiff) beside
deepdiff on the whole states; both report the same paths. The page table runs Django
against a temporary SQLite database (WAL) through the test client, as bench_traces does.
Targets: a diff of two 1 MB states <= 200 ms; a timeline page <= 300 ms.
"""

from __future__ import annotations

import copy
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from deepdiff import DeepDiff

from bench._harness import Row, Table, quick
from bench.bench_checkpoint import make_agent_state
from bench.bench_traces import _client, _django, _timed

CHECKPOINTS = 10_000


def _edited(state: dict[str, Any], seed: int = 1) -> dict[str, Any]:
    """The next step of an agent: a few messages appended, a few values changed."""
    rng = random.Random(seed)
    after = copy.deepcopy(state)
    after["step"] += 3
    for turn in range(3):
        after["messages"].append({"id": f"msg_new_{turn}", "role": "user", "content": "more"})
    for _ in range(5):
        after["messages"][rng.randrange(len(after["messages"]))]["tokens"] = rng.randint(1, 99)
    after["rewards"].extend([0.5, 0.25])
    after["scratchpad"][0] = "rewritten"
    return after


def _diff_table() -> Table:
    from dashboard.checkpoints.statediff import diff_states, render_folded

    before = make_agent_state(1_000_000, seed=0)
    after = _edited(before)
    repeats = 3 if quick() else 7
    ours = diff_states(before, after)

    def whole() -> object:
        return DeepDiff(before, after, view="tree", threshold_to_diff_deeper=0)

    rows = []
    for label, run in (
        ("diff_states (pruned, then deepdiff)", lambda: diff_states(before, after)),
        ("+ folded HTML view", lambda: render_folded(before, after, ours)),
        ("deepdiff on the whole states", whole),
    ):
        median, worst = _timed(run, repeats)
        rows.append(Row(label, median, f"max {worst:.0f} ms"))
    return Table(
        title=f"Diff of two ~1 MB agent states ({len(ours.changes)} changes; "
        f"median of {repeats}; target <= 200 ms)",
        unit="ms",
        baseline="deepdiff on the whole states",
        rows=rows,
    )


def _fill(workflow_id: str, count: int) -> list[str]:
    """``count`` checkpoint rows (all but the newest 60 without blobs) and 60 real saves."""
    from dashboard.checkpoints.models import Checkpoint
    from dashboard.checkpoints.store import get_manager

    start = time.time() - count
    rows = []
    for i in range(count - 60):
        tick = int((start + i) * 1_000_000)
        rows.append(
            Checkpoint(
                checkpoint_id=f"ck_{tick:014x}_{i:012x}",
                agent_id="orchestrator",
                workflow_id=workflow_id,
                created_at=_when(start + i),
                created_ts=start + i,
                raw_size=2_000,
                stored_size=700,
                sha256="0" * 64,
                codec="zstd",
                metadata={"step": i % 12, "agent": "writer", "status": "running"},
                storage_path=f"checkpoints/ck_{tick:014x}_{i:012x}.ckpt",
            )
        )
    Checkpoint.objects.bulk_create(rows, batch_size=1000)
    state = make_agent_state(2_000, seed=3)
    manager = get_manager()
    return [
        manager.save_checkpoint(state | {"i": i}, "orchestrator", workflow_id, {"step": i % 12})
        for i in range(60)
    ]


def _when(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC)


def _pages_table(tmp: Path) -> Table:
    from django.test.utils import override_settings

    from dashboard.checkpoints.store import get_manager

    with override_settings(MEDIA_ROOT=tmp / "media"):
        newest = _fill("bench-wf", CHECKPOINTS)
        client = _client()
        repeats = 3 if quick() else 7
        base = "/checkpoints/workflows/bench-wf/"
        ids = ",".join(newest[-50:])

        def page(url: str) -> None:
            response = client.get(url)
            assert response.status_code == 200 and response.content.count(b"<tr data-") == 50

        def verify() -> None:
            assert client.get(f"/checkpoints/verify/?ids={ids}").content.count(b"ok</span>") == 50

        big = make_agent_state(1_000_000, seed=0)
        manager = get_manager()
        big_a = manager.save_checkpoint(big, "orchestrator", "bench-big")
        big_b = manager.save_checkpoint(_edited(big), "orchestrator", "bench-big")

        def state_page() -> None:
            response = client.get(f"/checkpoints/{big_b}/?q=rewritten")
            assert response.status_code == 200 and b"$.scratchpad[0]" in response.content

        def diff_page() -> None:
            response = client.get(f"/checkpoints/diff/?a={big_a}&b={big_b}")
            assert response.status_code == 200 and b'id="changes"' in response.content

        rows = []
        for label, run in (
            ("timeline, first page", lambda: page(base)),
            ("timeline, last page", lambda: page(base + "?page=200")),
            (
                "timeline, one agent, oldest first",
                lambda: page(base + "?agent=orchestrator&order=oldest"),
            ),
            ("verified column: 50 blobs verified", verify),
            ("state page, ~1 MB state, with a search", state_page),
            ("diff page, two ~1 MB states (verify, decode, diff)", diff_page),
        ):
            median, worst = _timed(run, repeats)
            rows.append(Row(label, median, f"max {worst:.0f} ms"))
    return Table(
        title=f"Checkpoint pages: a timeline of {CHECKPOINTS:,} checkpoints in one workflow, "
        f"50 a page (target <= 300 ms); a ~1 MB state and diff (test client, median of "
        f"{repeats})",
        unit="ms",
        baseline="timeline, first page",
        rows=rows,
    )


def tables() -> list[Table]:
    result = [_diff_table()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-timetravel-"))
    try:
        with _django(tmp):
            result.append(_pages_table(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    from bench._harness import print_tables

    print_tables(tables())
