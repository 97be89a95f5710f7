"""Tiny timing harness shared by the benchmarks: best-of-N loops, ratio tables."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Row", "Table", "per_call_ns", "quick"]


def quick() -> bool:
    """True when BENCH_QUICK is set: fewer repeats, for a smoke run."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def per_call_ns(fn: Callable[[], object], *, number: int = 200_000, repeat: int = 7) -> float:
    """Best-of-``repeat`` nanoseconds per call of ``fn`` over ``number`` calls.

    The minimum is the least disturbed run; the loop's own cost is subtracted.
    """
    if quick():
        number, repeat = max(number // 10, 1), 3
    loop = range(number)

    def empty() -> None:
        return None

    def run(target: Callable[[], object]) -> float:
        gc_was = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for _ in loop:
                target()
            return (time.perf_counter_ns() - start) / number
        finally:
            if gc_was:
                gc.enable()

    overhead = min(run(empty) for _ in range(repeat))
    best = min(run(fn) for _ in range(repeat))
    return max(best - overhead, 0.0)


@dataclass
class Row:
    label: str
    value: float
    note: str = ""


@dataclass
class Table:
    """Rows of one measurement; ratios are against the row named ``baseline``."""

    title: str
    unit: str
    baseline: str
    rows: list[Row]
    lower_is_better: bool = True

    def render(self) -> str:
        base = next((r.value for r in self.rows if r.label == self.baseline), None)
        width = max(len(r.label) for r in self.rows) + 2
        lines = [f"\n## {self.title}", f"{'':{width}}{self.unit:>14}  {'ratio':>8}"]
        for row in self.rows:
            ratio = f"{row.value / base:8.2f}x" if base else "       -"
            lines.append(f"{row.label:{width}}{row.value:14.1f}  {ratio}  {row.note}".rstrip())
        lines.append(
            f"(ratio = value / {self.baseline!r}; "
            f"{'lower' if self.lower_is_better else 'higher'} is better)"
        )
        return "\n".join(lines)


def print_tables(tables: Iterable[Table]) -> None:
    for table in tables:
        print(table.render(), flush=True)
