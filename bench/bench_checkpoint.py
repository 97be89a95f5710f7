"""Checkpoint save/load cost per codec, against LangGraph's SqliteSaver.

A realistic agent state (conversation messages, tool calls with arguments and results,
a scratchpad, numeric arrays) of ~100 KB and ~1 MB, generated deterministically, is
saved and loaded with each codec (durable: fsync of file and directory, SHA-256, index
row) and with ``langgraph.checkpoint.sqlite.SqliteSaver.put`` / ``get_tuple`` (package
``langgraph-checkpoint-sqlite``; skipped when it is not installed). Everything runs in
a temporary directory under /tmp.

Every kind is measured in interleaved rounds (median), so a load spike on a shared
machine hits them all; each row's note gives its CPU time per call too (process time,
steadier than wall time on a busy machine, but blind to waiting for the disk).

Durability per row (every row is durable when the call returns):

* ``files``: the default ``LocalCheckpointStore``. The blob goes to a temporary file,
  is fdatasynced, renamed and the directory fsynced (2 syncs), then indexed in SQLite
  (WAL, ``synchronous=NORMAL``: the last records may be lost on power loss, never the
  blobs; ``rebuild_index`` restores them).
* ``sqlite``: ``SqliteCheckpointStore``. Blob and record in one transaction of a WAL
  database with ``synchronous=FULL``: one fdatasync of the WAL per save, both durable.
* SqliteSaver (WAL, SQLite's default ``synchronous=FULL``): one fdatasync of the WAL per
  ``put``, like ``sqlite``. So ``sqlite`` against SqliteSaver is like for like in
  syncs; ours also compresses, hashes (SHA-256 of the stored bytes, checked before
  anything is decompressed) and signs when a key is set, and writes fewer bytes.

Issue 19's targets: save and load <= 1.0x SqliteSaver at ~100 KB and ~1 MB (zstd).
"""

from __future__ import annotations

import functools
import gc
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench._harness import Row, Table, quick
from resilience.checkpoint import SqliteCheckpointStore, StateCheckpointManager

__all__ = ["make_agent_state", "tables"]

CODECS = ("none", "gzip", "zstd")
# (store, codec, SQLite page size) rows, beside SqliteSaver.
KINDS = (
    *(("files", codec, 0) for codec in CODECS),
    ("sqlite", "none", 4096),
    ("sqlite", "zstd", 4096),
    ("sqlite", "zstd", 16384),
)
DURABILITY = {
    "files": "2 syncs/save (blob fdatasync, dir fsync)",
    "sqlite": "1 sync/save (WAL commit, FULL)",
}
SIZES = (("~100 KB", 100_000), ("~1 MB", 1_000_000))

_TOOLS = ("web_search", "read_file", "run_python", "sql_query", "send_email", "calculator")
_ROLES = ("user", "assistant", "tool")


class _Words:
    """A made-up vocabulary with Zipf-distributed word frequencies, like natural text."""

    def __init__(self, rng: random.Random, size: int = 20_000) -> None:
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        weights = [26 - i for i in range(26)]
        self.words = [
            "".join(rng.choices(letters, weights, k=1 + int(rng.expovariate(1 / 5))))
            for _ in range(size)
        ]
        total = 0.0
        self.cumulative = []
        for rank in range(1, size + 1):
            total += 1 / rank
            self.cumulative.append(total)
        self.rng = rng

    def text(self, count: int) -> str:
        picked = self.rng.choices(self.words, cum_weights=self.cumulative, k=count)
        sentence = " ".join(picked)
        return sentence[:1].upper() + sentence[1:] + "."


def _turns(rng: random.Random, words: _Words, turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for turn in range(turns):
        role = _ROLES[turn % 3]
        message: dict[str, Any] = {
            "id": f"msg_{turn:06d}",
            "role": role,
            "content": words.text(rng.randint(20, 120)),
            "tokens": rng.randint(20, 900),
        }
        if role == "assistant":
            call = {
                "id": f"call_{rng.getrandbits(48):012x}",
                "name": rng.choice(_TOOLS),
                "arguments": {
                    "query": words.text(rng.randint(3, 12)),
                    "limit": rng.choice((5, 10, 20)),
                    "filters": {"lang": "en", "since": f"2024-{rng.randint(1, 12):02d}-01"},
                },
            }
            message["tool_calls"] = [call["id"]]
            tool_calls.append(
                call | {"result": {"ok": rng.random() > 0.1, "rows": rng.randint(0, 500)}}
            )
        messages.append(message)
    return {"messages": messages, "tool_calls": tool_calls}


def _build(seed: int, turns: int) -> dict[str, Any]:
    rng = random.Random(seed)
    words = _Words(rng)
    return {
        "agent_id": "research-agent",
        "workflow_id": "quarterly-report",
        "step": turns,
        **_turns(rng, words, turns),
        "scratchpad": [words.text(rng.randint(10, 60)) for _ in range(turns // 8)],
        "embeddings": [
            [round(rng.gauss(0, 0.3), 5) for _ in range(256)] for _ in range(max(1, turns // 25))
        ],
        "rewards": [round(rng.random(), 4) for _ in range(turns)],
        "token_counts": [rng.randint(10, 4000) for _ in range(turns)],
    }


def make_agent_state(target_bytes: int, seed: int = 0) -> dict[str, Any]:
    """A deterministic agent state whose JSON is within a few % of ``target_bytes``."""
    guess = max(3, target_bytes // 750)
    size = len(orjson.dumps(_build(seed, guess)))
    return _build(seed, max(3, round(guess * target_bytes / size)))


def _ms_per_call(fn: Callable[[], object], number: int) -> tuple[float, float]:
    """(wall, CPU) ms per call."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    wall = time.perf_counter() - start
    return wall * 1000 / number, (time.process_time() - cpu) * 1000 / number


def _interleaved(
    calls: dict[str, Callable[[], object]], number: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """Median over ``repeat`` rounds of the mean (wall, CPU) ms per call; every round
    runs each entry once in turn, so a load spike on a shared machine hits them alike."""
    for fn in calls.values():
        fn()  # warm up (creates files, connections, caches)
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in calls}
    for _ in range(repeat):
        for label, fn in calls.items():
            runs[label].append(_ms_per_call(fn, number))
    return {
        label: (
            statistics.median(wall for wall, _cpu in values),
            statistics.median(cpu for _wall, cpu in values),
        )
        for label, values in runs.items()
    }


def _langgraph(state: dict[str, Any], directory: str) -> tuple[
    Callable[[], object], Callable[[], object], Callable[[], None]
] | None:  # fmt: skip
    """(put, get_tuple of the latest put, close) of a SqliteSaver, or None without it."""
    try:
        from langgraph.checkpoint.base import empty_checkpoint
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        return None
    conn = sqlite3.connect(f"{directory}/langgraph.sqlite", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    config: Any = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
    saved: list[Any] = []

    def put() -> None:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = state
        saved.append(saver.put(config, checkpoint, {"source": "loop", "step": 1}, {}))
        del saved[:-1]

    def get() -> object:
        return saver.get_tuple(saved[-1])

    put()
    loaded = saver.get_tuple(saved[-1])
    assert loaded is not None and loaded.checkpoint["channel_values"] == state
    return put, get, conn.close


def tables() -> list[Table]:
    number, repeat = (3, 3) if quick() else (10, 7)
    out: list[Table] = []
    ratios: list[Row] = []
    for label, target in SIZES:
        state = make_agent_state(target)
        raw = len(orjson.dumps(state))
        saves: dict[str, Callable[[], object]] = {}
        loads: dict[str, Callable[[], object]] = {}
        notes: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="bench-checkpoint-", dir="/tmp") as tmp:
            managers = []
            for kind, codec, page_size in KINDS:
                directory = f"{tmp}/{kind}-{codec}-{page_size}"
                store = (
                    SqliteCheckpointStore(directory, page_size=page_size)
                    if kind == "sqlite"
                    else None
                )
                manager = StateCheckpointManager(directory, compression=codec, store=store)
                managers.append(manager)
                checkpoint_id = manager.save_checkpoint(state, "agent", "workflow")
                assert manager.load_checkpoint(checkpoint_id) == orjson.loads(orjson.dumps(state))
                info = manager.get_checkpoint_info(checkpoint_id)
                name = f"{kind} {codec}" + (f" {page_size // 1024}K" if page_size else "")
                saves[name] = functools.partial(manager.save_checkpoint, state, "agent", "workflow")
                loads[name] = functools.partial(manager.load_checkpoint, checkpoint_id)
                stored = info["stored_size"] / 1000
                notes[name] = f"{DURABILITY[kind]}; {stored:.0f} KB stored"
                if kind == "files":
                    ratios.append(Row(f"{codec} {label}", info["ratio"]))
            langgraph = _langgraph(state, tmp)
            baseline = "files none"
            if langgraph is not None:
                baseline = "SqliteSaver"
                saves[baseline], loads[baseline] = langgraph[0], langgraph[1]
            save_ms = _interleaved(saves, number, repeat)
            load_ms = _interleaved(loads, number, repeat)
            for manager in managers:
                manager.close()
            if langgraph is not None:
                langgraph[2]()
        lg_note = "1 sync/put (WAL commit, FULL); msgpack, no compression, no hash"
        notes[baseline] = notes.get(baseline, lg_note)
        save_rows = [
            Row(name, wall * 1000, f"cpu {cpu * 1000:.0f}; {notes[name]}")
            for name, (wall, cpu) in save_ms.items()
        ]
        load_rows = [
            Row(name, wall * 1000, f"cpu {cpu * 1000:.0f}") for name, (wall, cpu) in load_ms.items()
        ]
        size = f"{label} state ({raw / 1000:.0f} KB JSON)"
        out.append(Table(f"checkpoint save, {size}", "us/save", baseline, save_rows))
        out.append(Table(f"checkpoint load, {size}", "us/load", baseline, load_rows))
    out.append(
        Table(
            "compression ratio (raw / stored)", "ratio", "none ~1 MB", ratios, lower_is_better=False
        )  # fmt: skip
    )
    return out
