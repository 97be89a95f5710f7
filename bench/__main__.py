"""Run every benchmark: ``python -m bench [name ...]`` (``make bench``).

Each ``bench/bench_<name>.py`` defines ``tables() -> list[Table]``.
Set BENCH_QUICK=1 for a fast smoke run with fewer repeats.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys

import bench
from bench._harness import print_tables


def main(argv: list[str]) -> int:
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )
    wanted = argv or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}")
        return 2
    print(f"# resilience benchmarks — Python {platform.python_version()}, {platform.machine()}")
    for name in wanted:
        module = importlib.import_module(f"bench.bench_{name}")
        print_tables(module.tables())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
