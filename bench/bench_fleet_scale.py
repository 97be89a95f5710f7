"""``python -m bench fleet_scale``: the fleet-at-scale tables of ``bench_fleet`` alone.

50 instances x 20 breakers at 1 Hz into one daphne process, over HTTP and over Redis:
server CPU per report, transition → browser and command → applied latencies (see
``bench/_fleet_scale.py``).
"""

from __future__ import annotations

from bench._fleet_scale import scale_tables
from bench._harness import Table


def tables() -> list[Table]:
    return scale_tables()
