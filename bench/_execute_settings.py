"""Settings of the execute bench's server: the dashboard's, plus the unhardened twin.

``DJANGO_SETTINGS_MODULE=bench._execute_settings`` with ``dashboard.asgi:application``
serves the whole dashboard (same middleware, auth, database) and, from
:mod:`bench._execute_urls`, ``POST /bench/plain/{id}/execute``: the same workflow
without the limiter, breakers, tracing and checkpoints. The fake services answer at
once, and the execution budget is high enough that the limiter always admits (its
check still runs).
"""

from __future__ import annotations

from dashboard.settings import *  # noqa: F403  (bench only: the dashboard's settings)

ROOT_URLCONF = "bench._execute_urls"
WORKFLOW_EXECUTE_RATE = "100000000/1"
WORKFLOW_SERVICES = {
    name: {"mode": "healthy", "latency_ms": 0.0} for name in ("search-api", "llm", "payments")
}
