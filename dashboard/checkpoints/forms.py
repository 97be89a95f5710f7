from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django import forms

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_MAX = timedelta(days=36500)
DURATION_HELP = "seconds, or a number with s, m, h, d or w: 30s, 15m, 12h, 7d"


def parse_duration(text: str) -> timedelta:
    """``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or plain seconds (``"90"``).

    Raises:
        ValueError: anything else (negative, unknown unit, over 100 years), with the
            text and the accepted forms in the message.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use {DURATION_HELP}")
    number, unit = match.groups()
    value = timedelta(seconds=float(number) * _UNITS[(unit or "s").lower()])
    if value > _MAX:
        raise ValueError(f"{text!r} is too long (at most 100 years)")
    return value


def format_duration(value: timedelta) -> str:
    """The largest whole unit up to days: ``7d``, ``36h``, ``90s``."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


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
