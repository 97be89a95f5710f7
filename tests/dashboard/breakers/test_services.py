from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from dashboard.breakers import recorder
from dashboard.breakers.models import BreakerEvent
from dashboard.breakers.services import BreakerNotFound, act_on_breaker
from dashboard.models import AuditEntry
from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState, circuit_breaker_registry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator() -> User:
    return User.objects.create_user("olga", password="pw-for-tests-123")


def test_reset_closes_the_breaker_and_is_audited_and_in_history(operator: User) -> None:
    breaker = circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    breaker.force_open()
    snapshot = act_on_breaker(
        name="pay", action="reset", user=operator, reason="  provider is back  ", source="api"
    )
    assert snapshot["state"] == "closed" and breaker.state is CircuitState.CLOSED
    entry = AuditEntry.objects.get(action="breaker.reset")
    assert (entry.user, entry.actor, entry.target, entry.source) == (operator, "olga", "pay", "api")
    assert entry.reason == "provider is back"
    assert entry.details == {"from": "forced_open", "to": "closed"}
    assert recorder.flush()
    row = BreakerEvent.objects.filter(breaker="pay", to_state="closed").get()
    assert (row.actor, row.note) == ("olga", "provider is back")


@pytest.mark.parametrize(
    ("action", "state"), [("force_open", "forced_open"), ("disable", "disabled")]
)
def test_operator_actions_change_state(operator: User, action: str, state: str) -> None:
    circuit_breaker_registry.get_or_create("llm", CircuitBreakerConfig())
    snap = act_on_breaker(name="llm", action=action, user=operator, source="dashboard")  # type: ignore[arg-type]
    assert snap["state"] == state
    assert AuditEntry.objects.get().action == f"breaker.{action}"


def test_unknown_breaker_raises_and_audits_nothing(operator: User) -> None:
    with pytest.raises(BreakerNotFound):
        act_on_breaker(name="ghost", action="reset", user=operator, source="api")
    assert not AuditEntry.objects.exists()


def test_bad_action_and_overlong_reason_are_refused(operator: User) -> None:
    circuit_breaker_registry.get_or_create("x", CircuitBreakerConfig())
    with pytest.raises(ValueError, match="action must be one of"):
        act_on_breaker(name="x", action="explode", user=operator, source="api")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason must be at most 500"):
        act_on_breaker(name="x", action="reset", user=operator, reason="r" * 501, source="api")
    assert not AuditEntry.objects.exists()
