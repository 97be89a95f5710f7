"""Property-based run of the whole API against its OpenAPI schema (schemathesis).

Every operation is called with generated parameters and bodies, authenticated with a
token that holds every permission; no response may be a 500 or disagree with the
schema (status code, content type, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, openapi
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard.api import testing, throttle
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

SCHEMA_URL = "/api/observability/openapi.json"
MAX_EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(db: None, settings: Any, tmp_path: Path) -> Iterator[Any]:
    # As django.test.Client does: requests must not close the test's connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    settings.API_RATE_LIMIT = "1000000/1"
    settings.API_DOCS_PUBLIC = True  # the schema is fetched without credentials
    settings.MEDIA_ROOT = tmp_path / "media"
    throttle.reset()
    yield openapi.from_wsgi(SCHEMA_URL, WSGIHandler())
    throttle.reset()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db: None) -> dict[str, str]:
    user = testing.make_user(
        "fuzz",
        "dashboard.view_dashboard",
        "dashboard.reset_metrics",
        "breakers.reset_breaker",
        "breakers.operate_breaker",
        "checkpoints.delete_checkpoint",
    )
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    return {"Authorization": f"Bearer {testing.token_for(user)}"}


def run_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


# schemathesis' own pytest integration (from_fixture) does not run on pytest 9 yet
# (it reads Function._nodeid), so each operation gets a plain Hypothesis test here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(
    api_schema: Any, token: dict[str, str], mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 25
    failures = []
    for operation in operations:
        try:
            run_operation(operation, mode, token)
        except Unsatisfiable:
            # No parameters and no body: nothing invalid to send (negative mode only).
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # collect them all: one report for every operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.django_db
def test_schema_lists_every_endpoint(client: Any) -> None:
    client.force_login(testing.make_user("reader", "dashboard.view_dashboard"))
    paths = client.get(SCHEMA_URL).json()["paths"]
    base = "/api/observability"
    assert set(paths) == {
        f"{base}/traces",
        f"{base}/traces/{{trace_id}}",
        f"{base}/metrics",
        f"{base}/metrics/reset",
        f"{base}/checkpoints",
        f"{base}/checkpoints/cleanup",
        f"{base}/checkpoints/{{checkpoint_id}}",
        f"{base}/circuit-breakers",
        f"{base}/circuit-breakers/{{name}}",
        f"{base}/circuit-breakers/{{name}}/reset",
        f"{base}/circuit-breakers/{{name}}/events",
        f"{base}/rate-limiters",
        f"{base}/rate-limiters/{{name}}",
        f"{base}/health",
        f"{base}/alerts",
        f"{base}/fleet/instances",
        f"{base}/fleet/circuit-breakers",
        f"{base}/fleet/rate-limiters",
        f"{base}/fleet/circuit-breakers/{{name}}",
        f"{base}/fleet/circuit-breakers/{{name}}/reset",
        f"{base}/fleet/circuit-breakers/{{name}}/force_open",
        f"{base}/fleet/circuit-breakers/{{name}}/disable",
        f"{base}/fleet/commands/{{batch}}",
        f"{base}/service-map",
    }
    assert set(paths[f"{base}/checkpoints/{{checkpoint_id}}"]) == {"get", "delete"}


@pytest.mark.django_db
def test_docs_page_is_served(client: Any) -> None:
    client.force_login(testing.make_user("reader", "dashboard.view_dashboard"))
    response = client.get("/api/observability/docs")
    assert response.status_code == 200
    assert SCHEMA_URL in response.content.decode()


@pytest.mark.django_db
def test_breaker_and_limiter_lists_document_their_fleet_fields(client: Any) -> None:
    client.force_login(testing.make_user("reader", "dashboard.view_dashboard"))
    schemas = client.get(SCHEMA_URL).json()["components"]["schemas"]
    for listing in ("BreakerListOut", "LimiterListOut"):
        fields = schemas[listing]["properties"]
        # Old clients read items/count only: those stay required, the fleet is additive.
        assert set(schemas[listing]["required"]) == {"items", "count"}
        assert {"items", "count", "fleet", "fleet_count"} <= set(fields)
    assert "service" in schemas["InstanceBreakerOut"]["properties"]
