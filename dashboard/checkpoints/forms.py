from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms

from dashboard.durations import HELP, DurationTooLong, parse_timedelta

DURATION_HELP = HELP


def parse_duration(text: str) -> timedelta:
    """A cleanup age: ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or seconds."""
    try:
        return parse_timedelta(text)
    except DurationTooLong:
        raise
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a duration; use {HELP}") from exc


class DurationTextField(forms.Field):
    """A duration typed as ``7d`` / ``12h`` / seconds; cleans to a ``timedelta``."""

    widget = forms.TextInput(attrs={"size": 10, "placeholder": "7d"})

    def to_python(self, value: Any) -> timedelta | None:
        text = str(value or "").strip()
        if not text:
            return None
        if len(text) > 32:
            raise forms.ValidationError("Enter a duration like 7d or 12h.", code="invalid")
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from exc


class CleanupForm(forms.Form):
    """Cleanup rules; at least one is required. Applied per (agent, workflow) group."""

    keep_last = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1_000_000,
        help_text="keep the newest N checkpoints of every agent/workflow",
    )
    older_than = DurationTextField(
        required=False,
        help_text=f"only remove checkpoints older than this ({DURATION_HELP})",
    )
    reason = forms.CharField(required=False, max_length=500, help_text="recorded in the audit log")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("keep_last") is None and data.get("older_than") is None and not self.errors:
            raise forms.ValidationError("Give keep last N, older than, or both.", code="empty")
        return data
