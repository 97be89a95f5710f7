"""The API layer has one pattern: routers in dashboard/api/routers/, auth through auth.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dashboard.api.api import api, workflows_api

ROUTERS = Path(__file__).resolve().parents[3] / "dashboard" / "api" / "routers"
OPEN_TO_ANYONE = {"/api/observability/health"}  # anonymous callers get the status only


def _schema_operations() -> list[tuple[str, str, dict[str, object]]]:
    schemas = [
        api.get_openapi_schema(path_prefix="/api/observability/"),
        workflows_api.get_openapi_schema(path_prefix="/api/"),
    ]
    return [
        (path, method, operation)
        for schema in schemas
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_operation_but_health_declares_its_credentials() -> None:
    operations = _schema_operations()
    assert len(operations) > 20
    for path, method, operation in operations:
        if path in OPEN_TO_ANYONE:
            assert "security" not in operation, path
        else:
            assert operation.get("security"), f"{method.upper()} {path} has no auth"


@pytest.mark.parametrize("built", [api, workflows_api], ids=["observability", "workflows"])
def test_every_router_lives_in_dashboard_api_routers(built: object) -> None:
    modules = {
        operation.view_func.__module__
        for _prefix, router in built._routers  # type: ignore[attr-defined]
        for path_operation in router.path_operations.values()
        for operation in path_operation.operations
    }
    assert modules
    assert {m for m in modules if not m.startswith("dashboard.api.routers.")} == set()


def test_no_router_throttles_by_hand_or_spells_out_a_permission() -> None:
    # Throttling runs in the auth step (dashboard/api/auth.py); names come from
    # dashboard/permissions.py.
    for path in ROUTERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "check":
                assert ast.unparse(node.value) != "throttle", path.name
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "dashboard.view_dashboard" not in node.value, path.name
