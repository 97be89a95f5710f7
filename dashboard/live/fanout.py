"""In-process fan-out: one rendered fragment, one websocket frame, written to every socket.

The live groups are per process (see :mod:`.broadcast`): only this process's
broadcaster and sampler push to them. Sending those pushes through the channel layer
costs, for *each* socket, a deep copy of the message, a queue put, a wake-up of the
consumer's task and (in channels' ``dispatch``) a hop to the database thread to close
stale connections. Here the message is rendered once and handed to each consumer of
the group directly.

Frames. Even handed over directly, a ``send`` costs the server's websocket framing per
socket (daphne: autobahn builds the frame, ~68 µs a socket; uvicorn's websockets
protocol: the frame, and permessage-deflate compressing the same text once per socket).
So a push is also encoded once as a websocket text frame (:func:`text_frame`: server
frames are never masked) and the same bytes are written to each socket's transport
(:class:`FrameWriter`, found from the ASGI ``send`` callable of daphne or of uvicorn's
websockets protocol; any other server, and the test communicator, keep the ordinary
``send``). An uncompressed frame is valid on a socket that negotiated permessage-deflate
(RFC 7692: the RSV1 bit marks a compressed message), and the servers write whole frames
synchronously on the event loop, so frames never interleave. A socket whose transport
already holds more than ``max_buffered`` bytes (a browser that stopped reading) does not
get the frame: it is dropped and counted (``dropped``), the consumer closes that socket
(1013, try again later) so the page reconnects and reloads its state, and the other
sockets are never held up.

Concurrency model: everything runs on the server's event loop (consumers join and leave
there, the broadcaster and sampler push from there); nothing here is thread-safe and
nothing needs to be. Members are held weakly, so a consumer that died without
``disconnect`` does not linger. A consumer that joined but has not sent its initial
state yet holds the pushes in a backlog (``LiveConsumer.deliver``), so a page never
shows a pushed state older than its initial one.
"""

from __future__ import annotations

import enum
import functools
import logging
import struct
import weakref
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MAX_BUFFERED = 1 << 20
"""Bytes a socket's transport may hold unsent before pushes to it are dropped."""


class Outcome(enum.Enum):
    """What :meth:`FrameMember.deliver_frame` did with a frame."""

    SENT = "sent"
    SKIPPED = "skipped"  # the page does not show it (nothing to send)
    DROPPED = "dropped"  # the socket is too far behind: not written
    CLOSED = "socket-closed"  # the socket is closed or closing: not written
    FALLBACK = "fallback"  # no frame path for this socket now: use ``deliver``


class Member(Protocol):
    async def deliver(self, message: dict[str, Any]) -> None: ...


class FrameMember(Member, Protocol):
    def deliver_frame(self, message: dict[str, Any], frame: bytes) -> Outcome: ...


def text_frame(text: str) -> bytes:
    """``text`` as one unfragmented, unmasked websocket text frame (RFC 6455 §5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class FrameWriter:
    """Writes pre-built frames to one socket's transport, if it is open and keeping up."""

    __slots__ = ("_buffered", "_is_open", "_write", "max_buffered")

    def __init__(
        self,
        transport: Any,
        *,
        is_open: Callable[[], bool],
        buffered: Callable[[], int],
        max_buffered: int = MAX_BUFFERED,
        write: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``write(frame)``, when given, replaces ``transport.write`` (False: the
        connection is lost)."""
        self._write = write or _plain_write(transport)
        self._is_open = is_open
        self._buffered = buffered
        self.max_buffered = max_buffered

    def write(self, frame: bytes) -> Outcome:
        if not self._is_open():
            return Outcome.CLOSED
        if self._buffered() > self.max_buffered:
            return Outcome.DROPPED
        return Outcome.SENT if self._write(frame) else Outcome.CLOSED


def _plain_write(transport: Any) -> Callable[[bytes], bool]:
    def write(frame: bytes) -> bool:
        transport.write(frame)
        return True

    return write


def _twisted_tcp_write(transport: Any) -> Callable[[bytes], bool] | None:
    """For a plain TCP Twisted transport: send now when nothing is queued.

    Twisted's ``write`` only queues: the bytes go out on a later reactor turn, after
    registering the socket for writability and unregistering it (under daphne's asyncio
    reactor: two ``epoll_ctl`` calls and a callback per socket per push, most of a
    push's cost at 1,000 sockets). asyncio's transports send at once when their buffer
    is empty; this does the same with Twisted's own non-blocking ``writeSomeData``, and
    queues what the kernel did not take. Only an exact ``twisted.internet.tcp.Server``
    (TLS wraps it in another transport, and must keep encrypting), else None.
    """
    try:
        from twisted.internet import tcp
    except ImportError:  # pragma: no cover - daphne always has Twisted
        return None
    if type(transport) is not tcp.Server:
        return None
    twisted: Any = transport  # Twisted is untyped here

    def write(frame: bytes) -> bool:
        transport = twisted
        if transport.dataBuffer or transport._tempDataLen or transport.disconnecting:
            transport.write(frame)  # something queued: keep the order
            return True
        sent = transport.writeSomeData(frame)
        if isinstance(sent, Exception):
            return False  # Twisted sees the loss on its next read
        if sent < len(frame):
            transport.write(frame[sent:])
        return True

    return write


def _twisted_buffered(transport: Any) -> int:
    # twisted.internet.abstract.FileDescriptor: written, not yet sent to the kernel.
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def frame_writer(send: Any, *, max_buffered: int = MAX_BUFFERED) -> FrameWriter | None:
    """A :class:`FrameWriter` for the socket behind an accepted ASGI ``send``, or None.

    Known servers: daphne (``partial(Server.handle_reply, protocol)``, an autobahn
    protocol on a Twisted transport) and uvicorn's ``--ws websockets`` (the bound
    ``asgi_send`` of a websockets protocol on an asyncio transport). Wrappers that keep
    the server's callable as ``real_send`` (channels' ``SessionMiddleware``, in
    ``AuthMiddlewareStack``: it saves a modified session on a response, which a push
    never is) are looked through. Anything else: None, and the consumer sends the
    ordinary way.
    """
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        server = getattr(send.func, "__self__", None)
        tcp_transport: Any = getattr(protocol, "transport", None)
        open_state = getattr(protocol, "STATE_OPEN", None)
        connections = getattr(server, "connections", None)
        if tcp_transport is None or open_state is None or not isinstance(connections, dict):
            return None
        transport = tcp_transport

        def daphne_open() -> bool:
            return (
                protocol.state == open_state
                and not transport.disconnecting
                and not connections.get(protocol, {}).get("disconnected")
            )

        return FrameWriter(
            transport,
            is_open=daphne_open,
            buffered=functools.partial(_twisted_buffered, transport),
            max_buffered=max_buffered,
            write=_twisted_tcp_write(transport),
        )
    protocol = getattr(send, "__self__", None)
    if protocol is None or getattr(send, "__name__", "") != "asgi_send":
        return None
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "get_write_buffer_size"):
        return None
    try:
        from websockets.protocol import State
    except ImportError:  # pragma: no cover - uvicorn without websockets has no such protocol
        return None
    if not hasattr(protocol, "state") or not hasattr(protocol, "handshake_completed_event"):
        return None  # e.g. uvicorn's wsproto protocol: keep the ordinary send

    def websockets_open() -> bool:
        return protocol.state is State.OPEN and not transport.is_closing()

    return FrameWriter(
        transport,
        is_open=websockets_open,
        buffered=transport.get_write_buffer_size,
        max_buffered=max_buffered,
    )


class LocalGroups:
    """This process's live consumers by group, and a direct ``group_send`` to them."""

    def __init__(self) -> None:
        self._groups: dict[str, weakref.WeakSet[Any]] = {}
        self.sent = 0
        self.errors = 0
        self.frames = 0  # pushes encoded as a frame (once each, whatever the sockets)
        self.written = 0  # frames written to a socket's transport as they are
        self.dropped = 0  # frames not written to a socket that was too far behind

    def add(self, group: str, member: Member) -> None:
        self._groups.setdefault(group, weakref.WeakSet()).add(member)

    def discard(self, group: str, member: Member) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._groups[group]

    def count(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    async def group_send(self, group: str, message: dict[str, Any]) -> int:
        """Deliver ``message`` to every member of ``group``; returns how many got it.

        Every member receives the same dict: members must not mutate it. A message with
        ``html`` is encoded once as a websocket frame, written as is to each member that
        has ``deliver_frame`` (see :class:`FrameMember`); the others, and those whose
        socket has no frame path, get ``deliver``.
        """
        members = list(self._groups.get(group, ()))
        delivered = failed = written = 0
        first: Exception | None = None
        html = message.get("html")
        frame: bytes | None = None
        if isinstance(html, str) and html:
            try:
                frame = text_frame(html)
            except UnicodeEncodeError:  # a lone surrogate: each socket's send decides
                frame = None
            else:
                self.frames += 1
        sent, dropped = Outcome.SENT, Outcome.DROPPED
        for member in members:
            try:
                if frame is not None:
                    fast = getattr(member, "deliver_frame", None)
                    if fast is not None:
                        outcome = fast(message, frame)
                        if outcome is sent:
                            written += 1
                            continue
                        if outcome is dropped:
                            self.dropped += 1
                            continue
                        if outcome is not Outcome.FALLBACK:
                            continue
                await member.deliver(message)
            except Exception as exc:  # one broken socket must not starve the others
                failed += 1
                first = first or exc
            else:
                delivered += 1
        if first is not None:
            # Usually sockets that closed while the push was on its way: one line per push.
            self.errors += failed
            logger.warning(
                "live push to %s: %d of %d sockets failed, first: %r",
                group,
                failed,
                len(members),
                first,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
        self.written += written
        self.sent += delivered + written
        return delivered + written

    def clear(self) -> None:
        self._groups.clear()
        self.sent = self.errors = self.frames = self.written = self.dropped = 0


local_groups = LocalGroups()
