"""What the hardening costs one workflow execution, over HTTP.

``python -m bench execute`` starts one daphne server (``dashboard.asgi`` with
``bench._execute_settings``: the dashboard on a throw-away SQLite database, the fake
services answering at once, the execution budget out of reach) and drives, with 16
keep-alive connections (one workflow id each), in turn:

- ``POST /bench/plain/{id}/execute``: the floor, the same handler without the limiter,
  breakers, tracing and checkpoints (:mod:`bench._execute_urls`);
- ``POST /api/workflows/{id}/execute``: the dashboard's, hardened.

Both with a bearer token, same server, same run; the ratio is what to read. The
server's CPU per request is steadier than req/s on a busy machine.
"""

from __future__ import annotations

import asyncio
import tempfile

from bench._harness import Row, Table, quick
from bench.bench_http import CONNECTIONS, _daphne, _dashboard_env, _load, _manage

FLOOR = "execute, no hardening"
SETTINGS = "bench._execute_settings"


def tables() -> list[Table]:
    seconds = 3.0 if quick() else 8.0
    rates: list[Row] = []
    costs: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-execute-") as directory:
        env = _dashboard_env(directory)
        env["DJANGO_SETTINGS_MODULE"] = SETTINGS
        _manage(env, "migrate", "--noinput")
        _manage(env, "ensure_demo_admin")
        token = _manage(env, "create_api_token", "bench", "--name", "bench").strip().split()[-1]
        auth = {"Authorization": f"Bearer {token}"}
        with _daphne("dashboard.asgi:application", env) as (port, pid):
            for label, path, note in [
                (FLOOR, "/bench/plain/bench-{n}/execute", "no limiter, breaker, trace, checkpoint"),
                ("execute, hardened", "/api/workflows/bench-{n}/execute", "the dashboard's"),
            ]:
                rate, cpu = asyncio.run(_load(port, path, auth, seconds, pid, method="POST"))
                rates.append(Row(label, rate, note))
                costs.append(Row(label, cpu, note))
    title = (
        f"POST .../execute, zero-latency services, {CONNECTIONS} keep-alive connections "
        "(daphne, loopback)"
    )
    return [
        Table(title, "req/s", FLOOR, rates, lower_is_better=False),
        Table(f"{title}: server CPU per request", "us/request", FLOOR, costs),
    ]
