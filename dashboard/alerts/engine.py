"""Turn observations into alerts: for-duration, cooldown, dedup while firing, resolve.

For each enabled rule and each subject it observes:

- the condition must hold for ``for_seconds`` (measured on the injected clock) before
  an :class:`Alert` fires, so a single blip does not page anyone;
- while an alert is firing, further observations only update its ``last_value``
  (no new alert, no new notification);
- when the condition clears, or the subject disappears, or the rule is disabled, the
  alert is resolved and a "resolved" notification is sent;
- after an alert fires, the same rule and subject do not fire again for
  ``cooldown_seconds`` (the condition stays pending meanwhile).

A rule that cannot be evaluated records the error in ``last_error`` and the loop goes
on with the next rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .models import Alert, AlertRule
from .sources import Observation, SampleMemory, evaluate

__all__ = ["Engine", "EvaluationReport"]

logger = logging.getLogger(__name__)

Notify = Callable[[Alert, str], object]


@dataclass(slots=True)
class EvaluationReport:
    """What one pass over the rules did."""

    rules: int = 0
    errors: int = 0
    fired: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)


def _noop(alert: Alert, event: str) -> None:
    return None


class Engine:
    """Evaluates alert rules; keep one per process (it remembers pending conditions).

    Args:
        clock: epoch seconds. Alerts are stored with wall-clock times, so durations are
            measured on the same clock; tests pass a fake one.
        notify: called as ``notify(alert, "firing" | "resolved")`` after the row is saved
            (a :class:`~dashboard.alerts.delivery.Notifier`); its errors are logged.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, notify: Notify | None = None
    ) -> None:
        self._clock = clock
        self._notify = notify or _noop
        self.memory = SampleMemory()
        self._pending: dict[tuple[int, str], float] = {}
        self.passes = 0

    def evaluate_all(self) -> EvaluationReport:
        """One pass over every rule; never raises because of a rule."""
        now = self._clock()
        report = EvaluationReport()
        rules = list(AlertRule.objects.prefetch_related("channels"))
        for rule in rules:
            if not rule.enabled:
                self._close_all(rule, now, "rule disabled", report)
                continue
            report.rules += 1
            try:
                self.evaluate_rule(rule, now=now, report=report)
            except Exception as exc:
                # Saving the alert itself failed (database trouble): show it on the rule.
                logger.exception("alert rule %r failed", rule.name)
                report.errors += 1
                self._record_error(rule, now, exc)
        live = {rule.pk for rule in rules}
        for key in [key for key in self._pending if key[0] not in live]:
            del self._pending[key]
        self.memory.prune(now)
        self.passes += 1
        return report

    def evaluate_rule(
        self, rule: AlertRule, *, now: float | None = None, report: EvaluationReport | None = None
    ) -> EvaluationReport:
        """Evaluate one rule now: fire, keep or resolve its alerts."""
        now = self._clock() if now is None else now
        report = report if report is not None else EvaluationReport()
        try:
            observations = evaluate(
                rule.kind, rule.parameters, memory=self.memory, key=rule.pk, now=now
            )
        except Exception as exc:
            report.errors += 1
            self._record_error(rule, now, exc)
            return report
        self._record_success(rule, now)
        firing = {alert.subject: alert for alert in rule.alerts.filter(state=Alert.State.FIRING)}
        seen: set[str] = set()
        for observation in observations:
            seen.add(observation.subject)
            alert = firing.get(observation.subject)
            if observation.active:
                self._active(rule, observation, alert, now, report)
            else:
                self._pending.pop((rule.pk, observation.subject), None)
                if alert is not None:
                    self._resolve(alert, now, observation.message, observation.value, report)
        for subject, alert in firing.items():
            if subject not in seen:
                self._resolve(
                    alert, now, f"{subject or 'subject'} is no longer observed", None, report
                )
        for key in [k for k in self._pending if k[0] == rule.pk and k[1] not in seen]:
            del self._pending[key]
        return report

    # -- transitions ---------------------------------------------------------------------

    def _active(
        self,
        rule: AlertRule,
        observation: Observation,
        alert: Alert | None,
        now: float,
        report: EvaluationReport,
    ) -> None:
        if alert is not None:  # already firing: dedup
            if alert.last_value != observation.value:
                alert.last_value = observation.value
                alert.save(update_fields=["last_value"])
            return
        key = (rule.pk, observation.subject)
        since = self._pending.setdefault(key, now)
        if now - since < rule.for_seconds:
            return
        previous = (
            Alert.objects.filter(rule=rule, subject=observation.subject)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        if previous is not None and now - previous.timestamp() < rule.cooldown_seconds:
            return
        del self._pending[key]
        held = f" for {now - since:g}s" if rule.for_seconds else ""
        alert = Alert.objects.create(
            rule=rule,
            subject=observation.subject,
            state=Alert.State.FIRING,
            severity=rule.severity,
            started_at=_datetime(now),
            value=observation.value,
            last_value=observation.value,
            message=f"{observation.message}{held}",
        )
        report.fired.append(alert)
        self._send(alert, Alert.State.FIRING)

    def _resolve(
        self, alert: Alert, now: float, message: str, value: float | None, report: EvaluationReport
    ) -> None:
        alert.state = Alert.State.RESOLVED
        alert.ended_at = _datetime(now)
        alert.message = f"{alert.message} — resolved: {message}"[:5000]
        if value is not None:
            alert.last_value = value
        alert.save(update_fields=["state", "ended_at", "message", "last_value"])
        report.resolved.append(alert)
        self._send(alert, Alert.State.RESOLVED)

    def _close_all(self, rule: AlertRule, now: float, why: str, report: EvaluationReport) -> None:
        for alert in rule.alerts.filter(state=Alert.State.FIRING):
            self._resolve(alert, now, why, None, report)
        for key in [k for k in self._pending if k[0] == rule.pk]:
            del self._pending[key]

    def _send(self, alert: Alert, event: str) -> None:
        try:
            self._notify(alert, event)
        except Exception:
            logger.exception("notifying %s of alert %s failed", event, alert.pk)

    # -- rule status ---------------------------------------------------------------------

    def pending_since(self, rule: AlertRule, subject: str) -> float | None:
        """When the rule's condition started holding for ``subject`` (not fired yet)."""
        return self._pending.get((rule.pk, subject))

    @staticmethod
    def _record_error(rule: AlertRule, now: float, exc: BaseException) -> None:
        rule.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        rule.last_evaluated_at = _datetime(now)
        try:
            AlertRule.objects.filter(pk=rule.pk).update(
                last_error=rule.last_error, last_evaluated_at=rule.last_evaluated_at
            )
        except Exception:
            logger.exception("could not record the error of alert rule %r", rule.name)

    @staticmethod
    def _record_success(rule: AlertRule, now: float) -> None:
        rule.last_error = ""
        rule.last_evaluated_at = _datetime(now)
        AlertRule.objects.filter(pk=rule.pk).update(
            last_error="", last_evaluated_at=rule.last_evaluated_at
        )


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
