"""One vocabulary: breaker states come from CircuitState, permissions from one module."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from dashboard import permissions, selectors
from dashboard.api.schemas import BreakerStateName
from dashboard.breakers.models import BreakerState
from resilience.circuit_breaker import CircuitState

ROOT = Path(__file__).resolve().parents[2]
STATES = {state.value for state in CircuitState}


def test_every_spelling_of_a_breaker_state_is_a_circuit_state() -> None:
    assert set(get_args(BreakerStateName)) == STATES  # the API schema's enum
    assert set(BreakerState.values) == STATES  # the history table's choices
    assert set(selectors.BREAKER_STATES) == STATES  # the overview's counts


def test_permission_strings_are_written_only_in_the_permissions_module() -> None:
    declared = {v for k, v in vars(permissions).items() if k.isupper()}
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in declared))
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "dashboard").rglob("*.py")
        if path.name != "permissions.py" and "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found
