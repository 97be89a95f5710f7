from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from resilience.dispatch import BatchDispatcher
from resilience.errors import ConfigValueError


def test_items_are_delivered_in_batches_in_order() -> None:
    batches: list[list[int]] = []
    d: BatchDispatcher[int] = BatchDispatcher(batches.append, max_batch=3, interval=10)
    for i in range(7):
        assert d.submit(i)
    assert d.flush(5)
    assert [i for b in batches for i in b] == list(range(7))
    assert all(len(b) <= 3 for b in batches)
    assert d.delivered == 7
    d.shutdown()


def test_full_queue_drops_and_counts_without_blocking() -> None:
    gate = threading.Event()
    got: list[int] = []

    def slow(batch: list[int]) -> None:
        gate.wait(5)
        got.extend(batch)

    d: BatchDispatcher[int] = BatchDispatcher(slow, max_queue=2, max_batch=1, interval=0.01)
    d.submit(0)
    # Wait until the worker holds item 0, so the queue is empty and then fills to 2.
    for _ in range(500):
        if len(d) == 0:
            break
        threading.Event().wait(0.002)
    results = [d.submit(i) for i in range(1, 6)]
    assert results == [True, True, False, False, False]
    assert d.dropped == 3
    gate.set()
    assert d.flush(5)
    assert got == [0, 1, 2]
    d.shutdown()


def test_handler_errors_are_counted_and_worker_survives() -> None:
    calls: list[list[int]] = []

    def handler(batch: list[int]) -> None:
        calls.append(batch)
        if batch[0] == 0:
            raise RuntimeError("db down")

    d: BatchDispatcher[int] = BatchDispatcher(handler, max_batch=1, interval=10)
    d.submit(0)
    assert d.flush(5)
    d.submit(1)
    assert d.flush(5)
    assert calls == [[0], [1]]
    assert d.handler_errors == 1
    d.shutdown()


def test_shutdown_flushes_is_idempotent_and_later_submits_drop() -> None:
    got: list[int] = []
    d: BatchDispatcher[int] = BatchDispatcher(got.extend, interval=10)
    d.submit(1)
    d.shutdown()
    d.shutdown()
    assert got == [1]
    assert not d.submit(2)
    assert d.dropped == 1


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("max_queue", {"max_queue": 0}),
        ("max_batch", {"max_batch": -1}),
        ("interval", {"interval": 0}),
    ],
)
def test_invalid_configuration_names_the_field(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigValueError, match=field):
        BatchDispatcher(list, **kwargs)  # type: ignore[arg-type]


def test_a_forked_child_gets_a_working_worker_and_an_empty_queue(tmp_path: Path) -> None:

    out = tmp_path / "child.txt"

    def write(batch: list[str]) -> None:
        with out.open("a") as handle:
            handle.write("".join(batch))

    gate = threading.Event()
    d: BatchDispatcher[str] = BatchDispatcher(lambda b: gate.wait(5), interval=10)
    d.submit("parent-item")  # the parent's worker is stuck on it: still queued at fork
    d._handler = write
    pid = os.fork()
    if pid == 0:  # child: deliver one item of its own through the inherited dispatcher
        code = 1
        try:
            d.submit("child")
            code = 0 if d.flush(5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    gate.set()
    d.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().startswith("child")
    assert "parent-item" not in out.read_text().split("child", 1)[0]
