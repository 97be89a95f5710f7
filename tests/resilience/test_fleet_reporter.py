"""The worker's side of the fleet, without Django: reports, catch-up, commands, transport.

The transport is a real HTTP server on loopback where the wire matters, and a small
scripted transport where only the reporter's decisions do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import resilience.fleet as fleet
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
)
from resilience.events import BreakerStateChanged, CallRejected, EventBus
from resilience.fleet import HttpTransport, TransportError, instance_info
from resilience.rate_limiter import RateLimitConfig, RateLimiter
from tests.resilience._fleet_fixtures import command, empty_registries, fail, make  # noqa: F401


class Scripted:
    """Answers with queued answers, or raises while ``down``; keeps every report."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.down = False

    def send(self, body: bytes) -> dict[str, Any]:
        if self.down:
            raise TransportError("dashboard unreachable: refused")
        self.reports.append(json.loads(body))
        return self.answers.pop(0) if self.answers else {"protocol": 1, "commands": []}


def transition(name: str = "b", to: str = "open") -> BreakerStateChanged:
    return BreakerStateChanged(name=name, time=1.0, from_state="closed", to_state=to, reason="r")


def test_a_report_carries_the_instance_every_breaker_and_limiter() -> None:
    CircuitBreaker("payments", CircuitBreakerConfig(failure_threshold=3))
    RateLimiter(RateLimitConfig(max_requests=5, time_window=1), name="llm")
    transport = Scripted()
    reporter = make(transport)
    assert reporter.report_once()
    (report,) = transport.reports
    schema = fleet.schema()["$defs"]
    assert set(schema["Report"]["required"]) <= set(report)
    assert set(schema["Instance"]["required"]) <= set(report["instance"])
    assert report["protocol"] == 1 and report["seq"] == 1
    assert report["instance"]["service"] == "planner"
    assert [b["name"] for b in report["breakers"]] == ["payments"]
    assert report["breakers"][0]["state"] == "closed"
    assert report["breakers"][0]["config"]["failure_threshold"] == 3
    assert [limiter["name"] for limiter in report["limiters"]] == ["llm"]


def test_the_listener_keeps_only_transitions_and_drops_counted_when_full() -> None:
    reporter = make(Scripted(), max_events=2)
    reporter._on_event(CallRejected(name="b", time=1.0, state="open", remaining=1.0))
    reporter._on_event(
        BreakerStateChanged(
            name="b", time=1, from_state="closed", to_state="open", reason="r", observed=True
        )
    )
    for _ in range(5):
        reporter._on_event(transition())
    assert len(reporter._inbox) == 2
    assert reporter.events_dropped == 3


def test_transitions_are_kept_while_the_dashboard_is_down_and_sent_when_it_returns() -> None:
    bus = EventBus()
    transport = Scripted()
    reporter = make(transport, bus=bus)
    bus.subscribe(reporter._on_event)
    breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1))
    breaker.add_listener(bus.publish)
    transport.down = True
    fail(breaker, 1)  # the worker's call fails on its own error, not on the dashboard
    assert not reporter.report_once()
    assert not reporter.report_once()
    assert (reporter.reports_failed, reporter.failures, reporter.connected) == (2, 2, False)
    assert "unreachable" in (reporter.last_error or "")
    transport.down = False
    assert reporter.report_once()
    (report,) = transport.reports
    assert [(e["name"], e["to_state"]) for e in report["events"]] == [("db", "open")]
    assert report["stats"]["reports_failed"] == 2
    assert reporter.connected and reporter.failures == 0
    assert reporter.report_once()
    assert transport.reports[1]["events"] == []  # delivered once the answer came


def test_backoff_doubles_up_to_the_cap() -> None:
    reporter = make(Scripted(), interval=1.0, max_backoff=8.0)
    delays = []
    for failures in range(1, 7):
        reporter.failures = failures
        delays.append(reporter.backoff())
    caps = [1, 2, 4, 8, 8, 8]
    assert all(0.8 * cap <= delay <= cap for delay, cap in zip(delays, caps, strict=True))


def test_unsent_transitions_are_bounded_keeping_the_newest() -> None:
    transport = Scripted()
    reporter = make(transport, max_events=3)
    transport.down = True
    for index in range(5):
        reporter._on_event(transition(name=f"b{index}"))
        reporter.report_once()
    transport.down = False
    assert reporter.report_once()
    assert [e["name"] for e in transport.reports[0]["events"]] == ["b2", "b3", "b4"]
    assert reporter.events_dropped == 2


@pytest.mark.parametrize(
    ("action", "state"),
    [("force_open", "forced_open"), ("disable", "disabled"), ("reset", "closed")],
)
def test_commands_are_applied_and_acked(action: str, state: str) -> None:
    breaker = CircuitBreaker("pay", CircuitBreakerConfig(failure_threshold=1))
    fail(breaker, 1)
    transport = Scripted()
    transport.answers.append({"protocol": 1, "commands": [command(action)]})
    reporter = make(transport)
    assert reporter.report_once()
    assert breaker.state.value == state
    assert reporter.report_once()
    (ack,) = transport.reports[1]["acks"]
    assert (ack["command_id"], ack["ok"], ack["state"], ack["error"]) == ("c1", True, state, None)
    assert transport.reports[2:] == []


def test_a_repeated_command_is_applied_once_and_acked_again_the_same() -> None:
    breaker = CircuitBreaker("pay")
    reporter = make(Scripted())
    first = reporter.apply(command("force_open"))
    breaker.reset()
    assert reporter.apply(command("force_open")) == first
    assert breaker.state.value == "closed"
    assert reporter.commands_applied == 1


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (command("reset", target="missing"), "no breaker named 'missing'"),
        (command("explode"), "unsupported command"),
        ({**command("reset"), "kind": "limiter"}, "unsupported command"),
        ({**command("reset"), "target": 5}, "target must be a str"),
        ("reset everything", "malformed command"),
        ({"id": 7}, "malformed command"),
    ],
)
def test_bad_commands_are_acked_with_an_error(bad: object, error: str) -> None:
    CircuitBreaker("pay")
    ack = make(Scripted()).apply(bad)
    assert ack["ok"] is False
    assert error in (ack["error"] or "")


def test_an_answer_without_commands_is_fine() -> None:
    transport = Scripted()
    transport.answers.append({"protocol": 1, "commands": "nonsense"})
    assert make(transport).report_once()


def test_the_reporter_thread_reports_and_stops() -> None:
    transport = Scripted()
    bus = EventBus()
    reporter = make(transport, bus=bus, interval=60.0)
    reporter.start()
    try:
        assert reporter.start() is reporter
        for _ in range(200):  # the first report goes out at once
            if transport.reports:
                break
            threading.Event().wait(0.01)
        assert transport.reports
        bus.publish(transition())  # wakes the thread long before the 60 s interval
        for _ in range(300):
            if any(r["events"] for r in transport.reports):
                break
            threading.Event().wait(0.01)
        assert any(r["events"] for r in transport.reports)
    finally:
        reporter.stop()
    assert not reporter.running
    assert not bus.active


# -- the HTTP transport against a real server -------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    status = 200
    answer = b'{"protocol": 1, "commands": []}'
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.seen.append((self.path, dict(self.headers), body))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.answer)

    def do_GET(self) -> None:  # noqa: N802
        _Handler.seen.append((self.path, dict(self.headers), b""))
        self.send_response(self.get_status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.answer)

    get_status = 200

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    _Handler.status, _Handler.get_status, _Handler.seen = 200, 200, []
    _Handler.answer = b'{"protocol": 1, "commands": []}'
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_transport_posts_json_with_the_token(http_server: str) -> None:
    transport = HttpTransport(http_server + "/", token="rdt_x")
    assert transport.send(b"{}") == {"protocol": 1, "commands": []}
    ((path, headers, body),) = _Handler.seen
    assert path == "/api/fleet/v1/report"
    assert headers["Authorization"] == "Bearer rdt_x"
    assert headers["Content-Type"] == "application/json"
    assert body == b"{}"


@pytest.mark.parametrize(
    ("status", "answer", "message"),
    [
        (403, b'{"detail": "no"}', "answered 403"),
        (200, b"[]", "not a JSON object"),
        (200, b"<html>", "not JSON"),
    ],  # fmt: skip
)
def test_http_transport_errors_are_transport_errors(
    http_server: str, status: int, answer: bytes, message: str
) -> None:
    _Handler.status, _Handler.answer = status, answer
    with pytest.raises(TransportError, match=message):
        HttpTransport(http_server).send(b"{}")


def test_the_long_poll_asks_for_this_instance_and_returns_answers_with_commands(
    http_server: str,
) -> None:
    transport = HttpTransport(http_server, token="rdt_x")
    assert transport.receive("i-1", 0.5) == []  # no commands: nothing to apply
    ((path, headers, _),) = _Handler.seen
    assert path == "/api/fleet/v1/commands?instance=i-1&wait=0.5"
    assert headers["Authorization"] == "Bearer rdt_x"
    _Handler.answer = b'{"protocol": 1, "commands": [{"id": "c1"}]}'
    assert transport.receive("i-1", 0.5) == [{"protocol": 1, "commands": [{"id": "c1"}]}]
    assert not transport.push_unsupported


def test_an_older_dashboard_without_the_long_poll_stops_the_listener(http_server: str) -> None:
    _Handler.get_status = 404
    transport = HttpTransport(http_server)
    with pytest.raises(TransportError):
        transport.receive("i-1", 0.5)
    assert transport.push_unsupported
    reporter = make(transport, interval=60).start()
    try:
        listener = reporter._listener
        assert listener is not None
        listener.join(10)
        assert not listener.is_alive()  # it left: commands come with the reports
        assert reporter.running
    finally:
        reporter.stop()


def test_http_transport_to_a_closed_port_fails_fast() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match="unreachable"):
        HttpTransport(f"http://127.0.0.1:{port}", timeout=1).send(b"{}")


def test_bad_urls_and_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpTransport("ftp://x")
    with pytest.raises(ValueError, match="timeout"):
        HttpTransport("http://x", timeout=0)
    with pytest.raises(ValueError, match="interval"):
        make(Scripted(), interval=0)
    with pytest.raises(ValueError, match="service"):
        instance_info(service="")


# -- connect() ------------------------------------------------------------------------------


def test_connect_without_a_url_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESILIENCE_DASHBOARD_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert fleet.connect() is None
    assert fleet.current() is None


def test_connect_reads_the_environment(http_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("RESILIENCE_DASHBOARD_URL", http_server)
    monkeypatch.setenv("RESILIENCE_DASHBOARD_TOKEN", "rdt_env")
    monkeypatch.setenv("RESILIENCE_SERVICE_NAME", "tools")
    reporter = fleet.connect(interval=60)
    try:
        assert reporter is not None and fleet.current() is reporter
        assert fleet.connect() is reporter
        assert reporter.instance["service"] == "tools"
        for _ in range(300):  # the long-poll GET (empty body) may come before the report
            posted = [seen for seen in _Handler.seen if seen[2]]
            if posted:
                break
            threading.Event().wait(0.01)
        _path, headers, body = posted[0]
        assert headers["Authorization"] == "Bearer rdt_env"
        assert json.loads(body)["instance"]["version"] == fleet.library_version()
    finally:
        fleet.disconnect()
    assert fleet.current() is None


def test_a_forked_child_forgets_the_parents_reporter(http_server: str) -> None:
    import os
    import warnings

    reporter = fleet.connect(http_server, interval=60)
    assert reporter is not None
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without cleanup
        seen = fleet.current() is None and reporter._on_event not in reporter._bus._listeners
        os.write(write, b"1" if seen else b"0")
        os._exit(0)
    try:
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1"
        assert fleet.current() is reporter  # the parent keeps its own
    finally:
        os.close(read)
        os.close(write)
        fleet.disconnect()


def test_a_dashboard_that_never_answers_is_a_failed_report_after_the_timeout() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        reporter = make(HttpTransport(url, timeout=0.2))
        assert not reporter.report_once()
        assert reporter.reports_failed == 1
        assert "timed out" in (reporter.last_error or "")


def test_reports_stay_within_the_protocol() -> None:
    from resilience.fleet.protocol import encode

    CircuitBreaker("x" * 201)
    CircuitBreaker("ok")
    transport = Scripted()
    reporter = make(transport)
    assert reporter.report_once()
    assert [b["name"] for b in transport.reports[0]["breakers"]] == ["ok"]
    report = reporter.build_report()
    report["breakers"] = [{"name": "n", "state": "open", "x": float("inf"), "y": [float("nan")]}]
    assert b'"x":null,"y":[null]' in encode(report)


@pytest.mark.parametrize(
    ("asked", "interval"), [(0.5, 0.5), (0.001, 0.1), (1e9, 60.0), ("fast", 1.0), (True, 1.0)]
)
def test_the_dashboard_sets_the_report_interval_within_bounds(
    asked: object, interval: float
) -> None:
    transport = Scripted()
    transport.answers.append({"protocol": 1, "commands": [], "report_interval": asked})
    reporter = make(transport, interval=1.0)
    assert reporter.report_once()
    assert reporter.current_interval == interval


@pytest.mark.parametrize("operator_state", ["disable", "force_open"])
def test_a_reset_command_closes_a_disabled_or_forced_open_breaker(operator_state: str) -> None:
    breaker = CircuitBreaker("pay")
    getattr(breaker, operator_state)()
    ack = make(Scripted()).apply(command("reset"))
    assert (ack["ok"], ack["state"], breaker.state.value) == (True, "closed", "closed")
