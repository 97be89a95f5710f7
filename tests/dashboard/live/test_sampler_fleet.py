"""The sampler charts the fleet's totals, read from the database only while watched."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from dashboard.fleet import services
from dashboard.fleet.report import parse_report
from dashboard.live.broadcast import Broadcaster
from dashboard.live.sampler import Sampler
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db(transaction=True)


def _ingest() -> None:
    now = timezone.now().timestamp()
    body = {
        "protocol": 1,
        "instance": {"id": "w-1", "service": "planner", "host": "h", "pid": 1, "started_at": now},
        "seq": 1,
        "sent_at": now,
        "breakers": [{"name": "s", "state": "open", "calls": {"successful": 4, "rejected": 2}}],
        "limiters": [],
    }
    services.ingest_report(report=parse_report(json.dumps(body).encode()))


async def test_fleet_totals_join_the_sample_only_while_a_chart_page_is_watched() -> None:
    await database_sync_to_async(_ingest)()
    sampler = Sampler(Broadcaster(), clock=FakeClock(100.0))
    await sampler.tick()
    assert sampler.fleet is None
    assert "fleet.calls" not in sampler.samples[-1]["counters"]
    sampler.watchers["metrics"] += 1
    await sampler.tick()
    sample = sampler.samples[-1]
    assert (sample["counters"]["fleet.calls"], sample["key"]["fleet_breaker_rejected"]) == (4, 2)
    assert sample["gauges"]["fleet.instances"] == 1
    sampler.watchers["metrics"] -= 1
    await sampler.tick()
    assert sampler.fleet is None and "fleet.calls" not in sampler.samples[-1]["counters"]
