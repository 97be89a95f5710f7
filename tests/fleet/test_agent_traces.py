"""``manage.py run_agents`` as in ``make run``: a separate worker process whose spans
reach the dashboard over OTLP/HTTP (``/v1/traces``) under the agent's service name."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from tests.fleet.processes import ROOT, running_fleet, wait_until


def test_a_run_agents_workers_spans_arrive_under_its_service_name() -> None:
    with running_fleet(TRACES_ENABLED="1") as fleet:
        server = fleet.server
        # Its own token (minted like `make run` does: fleet reporting + span ingest);
        # spans only through HTTP: this process stores none itself.
        env = {**server.env, "TRACES_ENABLED": "0"}
        done = subprocess.run(
            [sys.executable, "manage.py", "run_agents", "--service", "billing-agent",
             "--url", server.url, "--seconds", "3", "--rate", "40"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        database = server.env["DATABASE_URL"].removeprefix("sqlite:///")

        def stored() -> list[tuple[str, str, str, str]]:
            with sqlite3.connect(database) as db:
                return db.execute(
                    "SELECT name, kind, resource, parent_span_id IS NULL FROM traces_spanrecord"
                    " WHERE service = 'billing-agent'"
                ).fetchall()

        rows = wait_until(stored, timeout=30)
        names = {(name, kind) for name, kind, _, _ in rows}
        assert ("billing-agent.step", "INTERNAL") in names
        assert any(name.startswith("call ") and kind == "CLIENT" for name, kind in names)
        assert any(root for *_, root in rows) and not all(root for *_, root in rows)
        assert all('"service.instance.id"' in resource for _, _, resource, _ in rows)
