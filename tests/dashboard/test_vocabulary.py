"""One vocabulary: breaker states come from CircuitState, permissions from one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

from dashboard import permissions, selectors
from dashboard.api.schemas import BreakerStateName
from dashboard.breakers.models import BreakerState
from dashboard.fleet import report
from dashboard.fleet import selectors as fleet_selectors
from resilience.circuit_breaker import CircuitState

ROOT = Path(__file__).resolve().parents[2]
STATES = {state.value for state in CircuitState}


def test_every_spelling_of_a_breaker_state_is_a_circuit_state() -> None:
    assert set(get_args(BreakerStateName)) == STATES  # the API schema's enum
    assert set(BreakerState.values) == STATES  # the history table's choices
    assert set(selectors.BREAKER_STATES) == STATES  # the overview's counts
    assert set(get_args(report.State)) == set(report.STATES) == STATES  # fleet protocol
    assert set(fleet_selectors.STATE_RANK) == STATES  # the fleet's worst-first order


# Where a state must be spelled out: typing.Literal enums (checked equal above), and
# words that are not breaker states there (an alert rule's "disabled" status).
SPELLED_OUT = {
    ("dashboard/api/schemas.py", "BreakerStateName"),
    ("dashboard/fleet/report.py", "State"),
}
NOT_A_BREAKER_STATE = {("dashboard/alerts/selectors.py", "disabled")}


def test_breaker_states_are_not_spelled_out_in_dashboard_code() -> None:
    found = []
    for path in (ROOT / "dashboard").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and (where, target.id) in SPELLED_OUT
                for target in node.targets
            ):
                allowed |= {id(inner) for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in STATES
                and id(node) not in allowed
                and (where, node.value) not in NOT_A_BREAKER_STATE
            ):
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert not found, found


def test_permission_strings_are_written_only_in_the_permissions_module() -> None:
    declared = {v for k, v in vars(permissions).items() if k.isupper()}
    pattern = re.compile(
        "|".join(re.escape(f"{quote}{name}{quote}") for name in declared for quote in "\"'")
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "dashboard").rglob("*.py")
        if path.name != "permissions.py" and "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found
