"""The workflow load generator run inside the serving process (the in-server demo).

Started by the runtime (:mod:`dashboard.runtime`) when ``RESILIENCE_DEMO`` is true, and by
``manage.py demo``. ``make run`` leaves it off and runs the same workload in its ``run_agents``
worker processes instead (``AGENTS= make run``, with no worker, turns it on). The
``WORKFLOW_DEMO_RATE`` setting (workflows per second, default 0.8) sets the load, here
and in each worker (:func:`config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from dashboard.workflows.loadgen import LoadConfig


def config(rate: float | None = None) -> LoadConfig:
    """The load: ``rate`` if given, else WORKFLOW_DEMO_RATE, else the default."""
    from dashboard.workflows.loadgen import LoadConfig

    if rate is None:
        value = getattr(settings, "WORKFLOW_DEMO_RATE", None)
        rate = None if value in (None, "") else float(value)
    return LoadConfig() if rate is None else LoadConfig(rate=rate)


def start(rate: float | None = None) -> bool:
    """Start the load generator once per process; returns False if already running."""
    from dashboard.workflows import loadgen
    from dashboard.workflows.engine import engine

    return loadgen.start(engine(), config(rate)) is not None


def stop(timeout: float = 5.0) -> None:
    """Stop the load generator of this process, if one runs."""
    from dashboard.workflows import loadgen

    loadgen.stop(timeout)
