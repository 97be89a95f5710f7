"""Checkpoint retention runs inside the serving process under the demo load."""

from __future__ import annotations

import re

from tests.ops.conftest import DemoServer, wait_until


def _deleted(server: DemoServer) -> float:
    found = re.search(
        r"^resilience_checkpoint_retention_deleted_total (\S+)$", server.scrape(), re.M
    )
    return float(found[1]) if found else 0.0


def test_the_server_deletes_checkpoints_by_policy(demo_server: DemoServer) -> None:
    # The demo server keeps 2 checkpoints per agent and workflow, none older than 5 s.
    wait_until(lambda: _deleted(demo_server) > 0, 60, "a retention run that deleted something")
    assert "resilience_checkpoint_retention_last_run_timestamp_seconds" in demo_server.scrape()
