"""The fan-out's frame path: one frame built per push, the same bytes to every socket."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from dashboard.live import fanout
from dashboard.live.fanout import FrameWriter, LocalGroups, Outcome, frame_writer, text_frame


def parse(data: bytes) -> tuple[Frame, bytes]:
    """One frame as websockets' own parser reads it (a client: unmasked frames), and the
    bytes left after it."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame: Frame = stop.value.value
    return frame, bytes(reader.buffer)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_is_one_final_unmasked_text_frame_of_any_length(size: int) -> None:
    text = ("é" * size)[:size] if size % 2 else "x" * size
    frame, rest = parse(text_frame(text))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert frame.data.decode() == text
    assert rest == b""


class Transport:
    """An asyncio transport as the writer sees it: write, buffer size, closing."""

    def __init__(self, *, buffered: int = 0, closing: bool = False) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def writer_for(transport: Transport, max_buffered: int = 100) -> FrameWriter:
    return FrameWriter(
        transport,
        is_open=lambda: not transport.closing,
        buffered=transport.get_write_buffer_size,
        max_buffered=max_buffered,
    )


def test_writer_writes_to_an_open_socket_that_keeps_up() -> None:
    transport = Transport(buffered=100)
    assert writer_for(transport).write(b"frame") is Outcome.SENT
    assert transport.written == [b"frame"]


def test_writer_drops_a_frame_for_a_socket_too_far_behind() -> None:
    transport = Transport(buffered=101)
    assert writer_for(transport).write(b"frame") is Outcome.DROPPED
    assert transport.written == []


def test_writer_does_not_write_to_a_closed_socket() -> None:
    transport = Transport(closing=True)
    assert writer_for(transport).write(b"frame") is Outcome.CLOSED
    assert transport.written == []


class FrameMember:
    """A consumer with a frame path: wants every message, writes through its writer."""

    def __init__(self, transport: Transport) -> None:
        self.writer = writer_for(transport)
        self.delivered: list[dict[str, Any]] = []

    def deliver_frame(self, message: dict[str, Any], frame: bytes) -> Outcome:
        return self.writer.write(frame)

    async def deliver(self, message: dict[str, Any]) -> None:
        self.delivered.append(message)


class SendMember:
    """A consumer without a frame path (another server, the test communicator)."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []

    async def deliver(self, message: dict[str, Any]) -> None:
        self.delivered.append(message)


async def test_one_frame_is_built_per_push_and_every_socket_gets_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []

    def counting(text: str) -> bytes:
        built.append(text)
        return text_frame(text)

    monkeypatch.setattr(fanout, "text_frame", counting)
    groups = LocalGroups()
    transports = [Transport() for _ in range(50)]
    members = [FrameMember(t) for t in transports]
    plain = SendMember()
    for member in [*members, plain]:
        groups.add("g", member)
    message = {"type": "live.fragment", "html": "<div>é</div>"}
    assert await groups.group_send("g", message) == 51
    assert built == ["<div>é</div>"]
    assert {t.written[0] for t in transports} == {text_frame("<div>é</div>")}
    assert all(len(t.written) == 1 for t in transports)
    assert all(m.delivered == [] for m in members)
    assert plain.delivered == [message]  # no frame path: the ordinary send
    assert (groups.frames, groups.written, groups.sent) == (1, 50, 51)


async def test_a_slow_socket_is_dropped_and_counted_and_the_others_still_get_the_frame() -> None:
    groups = LocalGroups()
    slow = Transport(buffered=10_000)
    fast = [Transport(), Transport()]
    members = [FrameMember(t) for t in (fast[0], slow, fast[1])]  # held: the groups are weak
    for member in members:
        groups.add("g", member)
    assert await groups.group_send("g", {"type": "live.fragment", "html": "x"}) == 2
    assert slow.written == []
    assert [t.written for t in fast] == [[text_frame("x")]] * 2
    assert groups.dropped == 1


async def test_a_closed_socket_gets_nothing_and_is_not_counted_as_delivered() -> None:
    groups = LocalGroups()
    closed, open_ = Transport(closing=True), Transport()
    members = [FrameMember(closed), FrameMember(open_)]
    for member in members:
        groups.add("g", member)
    assert await groups.group_send("g", {"type": "live.fragment", "html": "x"}) == 1
    assert closed.written == [] and open_.written == [text_frame("x")]


async def test_fallback_and_skip_outcomes() -> None:
    class Picky(FrameMember):
        def __init__(self, transport: Transport, outcome: Outcome) -> None:
            super().__init__(transport)
            self.outcome = outcome

        def deliver_frame(self, message: dict[str, Any], frame: bytes) -> Outcome:
            return self.outcome

    groups = LocalGroups()
    fallback = Picky(Transport(), Outcome.FALLBACK)
    skipped = Picky(Transport(), Outcome.SKIPPED)
    groups.add("g", fallback)
    groups.add("g", skipped)
    message = {"type": "live.fragment", "html": "x"}
    assert await groups.group_send("g", message) == 1
    assert fallback.delivered == [message] and skipped.delivered == []


async def test_a_message_without_html_is_delivered_not_framed() -> None:
    groups = LocalGroups()
    member = FrameMember(Transport())
    groups.add("g", member)
    message = {"type": "auth.session_ended"}
    assert await groups.group_send("g", message) == 1
    assert member.delivered == [message] and groups.frames == 0


async def test_html_that_cannot_be_encoded_is_delivered_by_send_not_lost() -> None:
    """A lone surrogate makes the frame unencodable: every socket still gets the push
    through its own send (which decides), rather than none of them."""
    groups = LocalGroups()
    member = FrameMember(Transport())
    groups.add("g", member)
    message = {"type": "live.fragment", "html": "bad \ud800"}
    assert await groups.group_send("g", message) == 1
    assert member.delivered == [message] and groups.frames == 0


# -- finding the socket behind a server's ``send`` -------------------------------------


def test_frame_writer_finds_daphnes_websocket_protocol() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet.testing import StringTransport

    # Built, never run: nothing listens.
    server = Server(application=None, endpoints=["tcp:0"], signal_handlers=False)
    protocol = WebSocketProtocol()
    protocol.transport = transport = StringTransport()
    protocol.state = protocol.STATE_OPEN
    server.connections = {protocol: {}}  # what Server.run() sets up

    class SessionWrapper:  # channels.sessions.InstanceSessionWrapper's shape
        def __init__(self, send: Any) -> None:
            self.real_send = send

        async def send(self, message: dict[str, Any]) -> None:
            await self.real_send(message)

    send = SessionWrapper(functools.partial(server.handle_reply, protocol)).send
    writer = frame_writer(send)
    assert writer is not None
    assert writer.write(text_frame("hi")) is Outcome.SENT
    assert transport.value() == text_frame("hi")
    server.connections[protocol]["disconnected"] = 1.0
    assert writer.write(text_frame("late")) is Outcome.CLOSED
    assert transport.value() == text_frame("hi")


def test_frame_writer_declines_an_unknown_send() -> None:
    async def send(message: dict[str, Any]) -> None:
        return None

    class Other:
        transport = Transport()

        async def send(self, message: dict[str, Any]) -> None:
            return None

    assert frame_writer(send) is None
    assert frame_writer(Other().send) is None
    assert frame_writer(functools.partial(send)) is None


# -- a real server ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
# `make run`'s `--ws websockets` is uvicorn's protocol on websockets.legacy, both deprecated.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
async def test_uvicorn_websockets_sockets_get_the_frame_written_as_is() -> None:
    """End to end under ``make run``'s server (uvicorn, the websockets protocol), with a
    client that negotiated permessage-deflate as browsers do: the plain frame reads."""
    import asyncio
    import socket

    import uvicorn
    from websockets.asyncio.client import connect

    from dashboard.asgi import application
    from dashboard.live import runtime
    from dashboard.live.broadcast import group
    from dashboard.live.fanout import local_groups

    from .test_consumers import session_cookie

    cookie = (await session_cookie("viewer", "view_dashboard")).decode()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, ws="websockets", lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving.result()
            await asyncio.sleep(0.01)
        async with connect(
            f"ws://127.0.0.1:{port}/ws/live/metrics/",
            origin="http://localhost",  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            proxy=None,
        ) as ws:
            assert ws.protocol.extensions  # permessage-deflate negotiated
            assert 'id="live-history"' in str(await ws.recv())
            written = local_groups.written
            await local_groups.group_send(
                group("metrics"), {"type": "live.fragment", "html": "<p>pushed é</p>"}
            )
            while (message := await asyncio.wait_for(ws.recv(), 5)) != "<p>pushed é</p>":
                assert "live-sample" in str(message)  # the sampler's own 1 Hz samples
            assert local_groups.written > written  # (and maybe samples, written alike)
    finally:
        server.should_exit = True
        await serving
        await runtime.stop()


# -- the consumers' frame path ------------------------------------------------------------


def ready_consumer(cls: Any, transport: Transport) -> Any:
    """A consumer past its initial state, writing frames to ``transport``."""
    consumer = cls()
    consumer.group = "g"
    consumer.backlog = None
    consumer.writer = writer_for(transport)
    return consumer


async def test_a_consumer_too_far_behind_is_dropped_closed_with_1013_and_leaves_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from dashboard.live.consumers import CLOSE_TRY_AGAIN, MetricsConsumer

    closed: list[int | None] = []

    async def close(self: Any, code: int | None = None, reason: str | None = None) -> None:
        closed.append(code)

    monkeypatch.setattr(MetricsConsumer, "close", close)
    groups = LocalGroups()
    monkeypatch.setattr("dashboard.live.consumers.local_groups", groups)
    slow, fast = Transport(buffered=10_000), Transport()
    consumers = [ready_consumer(MetricsConsumer, slow), ready_consumer(MetricsConsumer, fast)]
    for consumer in consumers:
        groups.add("g", consumer)
    message = {"type": "live.fragment", "html": "x"}
    assert await groups.group_send("g", message) == 1
    await asyncio.sleep(0)  # the close task runs
    assert closed == [CLOSE_TRY_AGAIN]
    assert groups.dropped == 1 and groups.count("g") == 1
    slow.buffered = 0
    await groups.group_send("g", message)
    assert slow.written == [] and fast.written == [text_frame("x")] * 2


async def test_a_consumer_still_sending_its_initial_state_keeps_pushes_in_its_backlog() -> None:
    from dashboard.live.consumers import MetricsConsumer

    transport = Transport()
    consumer = ready_consumer(MetricsConsumer, transport)
    consumer.backlog = []
    assert consumer.deliver_frame({"type": "live.fragment", "html": "x"}, b"f") is (
        Outcome.FALLBACK
    )
    assert transport.written == []


def test_the_breakers_page_writes_known_breakers_and_asks_for_a_card_for_new_ones() -> None:
    from dashboard.live.consumers import BreakersConsumer

    transport = Transport()
    consumer = ready_consumer(BreakersConsumer, transport)
    consumer.known = {"payments"}
    state = {"type": "breaker.state", "name": "payments", "html": "s"}
    assert consumer.deliver_frame(state, b"s") is Outcome.SENT
    new = {"type": "breaker.state", "name": "new", "html": "n"}
    assert consumer.deliver_frame(new, b"n") is Outcome.FALLBACK  # its card: deliver
    history = {"type": "breaker.history", "name": "other", "html": "h"}
    assert consumer.deliver_frame(history, b"h") is Outcome.SKIPPED
    assert transport.written == [b"s"]


def test_daphnes_plain_tcp_transport_is_sent_to_at_once_and_queued_when_behind() -> None:
    from twisted.internet import tcp

    from dashboard.live.fanout import _twisted_tcp_write

    class Server(tcp.Server):
        """A tcp.Server's write state without a socket or reactor."""

        def __init__(self, takes: int) -> None:
            self.takes, self.sent, self.queued = takes, [], []
            self.dataBuffer, self._tempDataLen, self.disconnecting = b"", 0, False

        def writeSomeData(self, data: bytes) -> int:
            self.sent.append(bytes(data[: self.takes]))
            return min(self.takes, len(data))

        def write(self, data: bytes) -> None:
            self.queued.append(data)
            self._tempDataLen += len(data)

    assert _twisted_tcp_write(Server(0)) is None  # only the exact class: not TLS, not others
    Server.__name__ = "Server"
    transport = Server(takes=3)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(tcp, "Server", Server)
    try:
        write = _twisted_tcp_write(transport)
    finally:
        monkey.undo()
    assert write is not None
    assert write(b"abcdef")
    assert transport.sent == [b"abc"] and transport.queued == [b"def"]  # the rest queued
    assert write(b"gh")  # something queued: behind it, in order
    assert transport.sent == [b"abc"] and transport.queued == [b"def", b"gh"]
