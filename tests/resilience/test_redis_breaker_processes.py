"""Four real processes share one Redis breaker: the half-open trial cap holds across them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience._redis_trial_workers import MAX_TRIALS
from tests.resilience.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


def test_four_processes_never_run_more_trials_of_one_period_than_the_cap(
    redis_server: RedisServer,
) -> None:
    name = f"trials-{uuid.uuid4().hex[:8]}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.resilience._redis_trial_workers",
             redis_server.url, name, "1.5", str(seed)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]  # fmt: skip
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        results.append(json.loads(out))
    by_period: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for result in results:
        for trial in result["trials"]:
            by_period[tuple(trial["period"])].append((trial["start"], trial["end"]))
    assert len(by_period) >= 5, "the breaker must have gone half-open many times"
    peaks = {period: most_at_once(runs) for period, runs in by_period.items()}
    assert max(peaks.values()) <= MAX_TRIALS, peaks
    assert max(peaks.values()) == MAX_TRIALS  # the cap was reached, so it was tested
