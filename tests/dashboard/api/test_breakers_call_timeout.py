"""The breaker API shows the new ``call_timeout`` config field."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard.api import testing, throttle
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

BASE = "/api/observability"


@pytest.mark.django_db
def test_breaker_config_shows_call_timeout(client: Client) -> None:
    throttle.reset()
    viewer = testing.bearer(testing.token_for(testing.make_user("tim", "dashboard.view_dashboard")))
    circuit_breaker_registry.get_or_create("llm-stream", CircuitBreakerConfig(call_timeout=30))
    circuit_breaker_registry.get_or_create("plain", CircuitBreakerConfig())
    body = client.get(f"{BASE}/circuit-breakers", **viewer).json()
    by_name = {item["name"]: item["config"] for item in body["items"]}
    assert by_name["llm-stream"]["call_timeout"] == 30.0
    assert by_name["plain"]["call_timeout"] is None
