from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms

from dashboard.durations import parse_duration_us

from .selectors import SORTS, TraceQuery

LOOKBACKS = {
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "all": None,
}
LOOKBACK_LABELS = {"5m": "Last 5 min", "15m": "Last 15 min", "1h": "Last hour",
                   "6h": "Last 6 hours", "24h": "Last 24 hours", "7d": "Last 7 days",
                   "all": "Everything stored"}  # fmt: skip


class TraceSearchForm(forms.Form):
    """The search page's GET filters; every field is optional."""

    service = forms.CharField(required=False, max_length=255)
    caller = forms.CharField(required=False, max_length=255, label="Called by")
    name = forms.CharField(required=False, max_length=255, label="Span name")
    attr = forms.CharField(
        required=False,
        max_length=500,
        label="Attribute",
        widget=forms.TextInput(attrs={"placeholder": "http.status_code=500"}),
    )
    errors_only = forms.BooleanField(required=False, label="Errors only")
    min_duration = forms.CharField(
        required=False, max_length=32, widget=forms.TextInput(attrs={"placeholder": "e.g. 250ms"})
    )
    max_duration = forms.CharField(
        required=False, max_length=32, widget=forms.TextInput(attrs={"placeholder": "e.g. 2s"})
    )
    lookback = forms.ChoiceField(
        required=False, choices=list(LOOKBACK_LABELS.items()), label="Time range"
    )
    start = forms.DateTimeField(
        required=False, label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    end = forms.DateTimeField(
        required=False, label="To", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    sort = forms.ChoiceField(required=False, choices=[(k, v[0]) for k, v in SORTS.items()])
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)

    def _duration(self, field: str) -> int | None:
        text = self.cleaned_data.get(field, "").strip()
        if not text:
            return None
        try:
            return parse_duration_us(text, default_unit="ms")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_min_duration(self) -> int | None:
        return self._duration("min_duration")

    def clean_max_duration(self) -> int | None:
        return self._duration("max_duration")

    def clean_attr(self) -> tuple[str, str] | None:
        text = self.cleaned_data.get("attr", "").strip()
        if not text:
            return None
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"write the attribute filter as key=value, got {text!r}")
        return key.strip(), value.strip()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        low, high = data.get("min_duration"), data.get("max_duration")
        if low is not None and high is not None and low > high:
            self.add_error("max_duration", "the maximum duration is below the minimum")
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and start > end:
            self.add_error("end", "the end of the time range is before its start")
        return data

    def to_query(self, *, now: datetime, per_page: int = 50) -> TraceQuery:
        """The TraceQuery for valid data; a custom From/To range beats the look-back."""
        data = self.cleaned_data
        since, until = data.get("start"), data.get("end")
        if since is None and until is None:
            lookback = LOOKBACKS[data.get("lookback") or "1h"]
            since = now - lookback if lookback is not None else None
        return TraceQuery(
            service=data.get("service", "").strip(),
            caller=data.get("caller", "").strip(),
            name=data.get("name", "").strip(),
            attribute=data.get("attr"),
            errors_only=bool(data.get("errors_only")),
            min_duration_us=data.get("min_duration"),
            max_duration_us=data.get("max_duration"),
            since=since,
            until=until,
            sort=data.get("sort") or "recent",
            page=data.get("page") or 1,
            per_page=per_page,
        )
