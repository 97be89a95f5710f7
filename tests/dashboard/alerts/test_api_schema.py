"""``GET /alerts`` against its OpenAPI schema (schemathesis), like the API's own run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, openapi
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard.alerts.models import Alert, AlertRule, Delivery, RuleKind
from dashboard.api import testing, throttle

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(db: None, settings: Any) -> Iterator[Any]:
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    settings.API_RATE_LIMIT = "1000000/1"
    settings.API_DOCS_PUBLIC = True  # the schema is fetched without credentials
    throttle.reset()
    rule = AlertRule.objects.create(name="open", kind=RuleKind.BREAKER_OPEN)
    alert = Alert.objects.create(
        rule=rule, subject="pay", severity="warning", started_at=datetime(2027, 1, 1, tzinfo=UTC)
    )
    Delivery.objects.create(alert=alert, channel_name="hook", event="firing", outcome="failed")
    yield openapi.from_wsgi("/api/observability/openapi.json", WSGIHandler())
    throttle.reset()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_alerts_endpoint_conforms_to_its_schema(api_schema: Any, mode: GenerationMode) -> None:
    user = testing.make_user("fuzz", "dashboard.view_dashboard")
    headers = {"Authorization": f"Bearer {testing.token_for(user)}"}
    [operation] = [
        op
        for op in (r.ok() for r in api_schema.get_all_operations())
        if op.path.endswith("/alerts")
    ]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
