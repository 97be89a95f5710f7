"""Checkpoint save/load cost per codec, against LangGraph's SqliteSaver.

A realistic agent state (conversation messages, tool calls with arguments and results,
a scratchpad, numeric arrays) of ~100 KB and ~1 MB, generated deterministically, is
saved and loaded with each codec (durable: fsync of file and directory, SHA-256, index
row) and with ``langgraph.checkpoint.sqlite.SqliteSaver.put`` / ``get_tuple`` (package
``langgraph-checkpoint-sqlite``; skipped when it is not installed). Everything runs in
a temporary directory under /tmp.

Targets for the 1 MB state with zstd: save <= 10 ms, load <= 3 ms, ratio >= 2.5, and
save within 2x of SqliteSaver.put.
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
from resilience.checkpoint import StateCheckpointManager

__all__ = ["make_agent_state", "tables"]

CODECS = ("none", "gzip", "zstd")
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


def _per_call_ms(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean ms per call over ``number`` calls."""
    fn()  # warm up (creates files, connections, caches)
    runs = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) * 1000 / number)
    return statistics.median(runs)


def _langgraph(state: dict[str, Any], directory: str, number: int, repeat: int) -> tuple[
    float, float
] | None:  # fmt: skip
    try:
        from langgraph.checkpoint.base import empty_checkpoint
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        return None
    conn = sqlite3.connect(f"{directory}/langgraph.sqlite", check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        config: Any = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        saved: list[Any] = []

        def put() -> None:
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = state
            saved.append(saver.put(config, checkpoint, {"source": "loop", "step": 1}, {}))

        save_ms = _per_call_ms(put, number, repeat)
        latest = saved[-1]
        loaded = saver.get_tuple(latest)
        assert loaded is not None and loaded.checkpoint["channel_values"] == state
        load_ms = _per_call_ms(lambda: saver.get_tuple(latest), number, repeat)
        return save_ms, load_ms
    finally:
        conn.close()


def tables() -> list[Table]:
    number, repeat = (3, 3) if quick() else (20, 5)
    out: list[Table] = []
    ratios: list[Row] = []
    for label, target in SIZES:
        state = make_agent_state(target)
        raw = len(orjson.dumps(state))
        saves: list[Row] = []
        loads: list[Row] = []
        with tempfile.TemporaryDirectory(prefix="bench-checkpoint-", dir="/tmp") as tmp:
            for codec in CODECS:
                manager = StateCheckpointManager(f"{tmp}/{codec}", compression=codec)
                save = functools.partial(manager.save_checkpoint, state, "agent", "workflow")
                save_ms = _per_call_ms(save, number, repeat)
                checkpoint_id = manager.get_latest_checkpoint()
                assert checkpoint_id is not None
                assert manager.load_checkpoint(checkpoint_id) == orjson.loads(orjson.dumps(state))
                load = functools.partial(manager.load_checkpoint, checkpoint_id)
                load_ms = _per_call_ms(load, number, repeat)
                manager.close()
                info = manager.get_checkpoint_info(checkpoint_id)
                note = f"stored {info['stored_size'] / 1000:.0f} KB, ratio {info['ratio']:.2f}"
                saves.append(Row(f"resilience {codec}", save_ms * 1000, note))
                loads.append(Row(f"resilience {codec}", load_ms * 1000, note))
                ratios.append(Row(f"{codec} {label}", info["ratio"]))
            langgraph = _langgraph(state, tmp, number, repeat)
        baseline = "resilience none"
        if langgraph is not None:
            baseline = "SqliteSaver"
            note = "langgraph-checkpoint-sqlite (msgpack, no compression)"
            saves.append(Row("SqliteSaver", langgraph[0] * 1000, "put: " + note))
            loads.append(Row("SqliteSaver", langgraph[1] * 1000, "get_tuple: " + note))
        size = f"{label} state ({raw / 1000:.0f} KB JSON)"
        out.append(Table(f"checkpoint save, {size}", "us/save", baseline, saves))
        out.append(Table(f"checkpoint load, {size}", "us/load", baseline, loads))
    out.append(
        Table(
            "compression ratio (raw / stored)", "ratio", "none ~1 MB", ratios, lower_is_better=False
        )  # fmt: skip
    )
    return out
