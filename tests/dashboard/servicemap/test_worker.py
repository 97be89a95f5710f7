from __future__ import annotations

from datetime import timedelta

import pytest

from dashboard.servicemap.models import EdgeMinute
from dashboard.servicemap.worker import RollupWorker
from tests.dashboard.servicemap.spans import T0, make

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_folds_new_spans_and_prunes_by_the_injected_clock() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id)
    worker = RollupWorker(clock=lambda: (T0 + timedelta(minutes=1)).timestamp())
    result = worker.run_once()
    assert (result.processed, result.calls, worker.runs) == (2, 1, 1)
    assert EdgeMinute.objects.count() == 1
    late = RollupWorker(clock=lambda: (T0 + timedelta(days=2)).timestamp())
    late.run_once()
    assert EdgeMinute.objects.count() == 0


def test_start_is_idempotent_and_stop_ends_the_thread() -> None:
    worker = RollupWorker(interval=3600)
    assert worker.start() is True
    assert worker.start() is False
    worker.stop()
    assert not worker.running


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        RollupWorker(interval=0)
