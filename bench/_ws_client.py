"""The live benchmark's websocket client: cheap enough to hold a thousand sockets.

The handshake is written by hand, then the server's (unmasked) frames are parsed from
the byte stream, a few µs a message, so the client takes as little of the machine
as it can (see :mod:`bench.bench_live`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

__all__ = ["Client", "open_many", "open_socket"]


class Client(asyncio.Protocol):
    """A cheap websocket client: the handshake by hand, then the server's (unmasked)
    frames parsed from the byte stream. ``on_text(payload, arrived)`` gets each text
    message with ``time.perf_counter()`` at its arrival; pings are answered."""

    def __init__(self, request: bytes, on_text: Any) -> None:
        self.request, self.on_text = request, on_text
        self.buffer = bytearray()
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_result(False)

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        buffer = self.buffer
        buffer += data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            accepted = buffer.startswith(b"HTTP/1.1 101")
            del buffer[: end + 4]
            self.opened.set_result(accepted)
            if not accepted:
                self.transport.close()
                return
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if buffer[1] & 0x80 or buffer[0] & 0x70:
                raise ValueError("the bench client reads unmasked, uncompressed frames only")
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            if opcode == 1:
                self.on_text(payload, arrived)
            elif opcode == 9:  # ping: a masked pong (mask key 0: payload unchanged)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.transport.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.write(b"\x88\x80\0\0\0\0")  # a masked close, no payload
            self.transport.close()


async def open_socket(port: int, path: str, cookie: str, on_text: Any) -> Client | None:
    # No Sec-WebSocket-Extensions: the servers send plain frames (browsers offer
    # permessage-deflate; the frames the fan-out writes are plain either way).
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:{port}\r\n"
        f"Cookie: {cookie}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    try:
        _, client = await loop.create_connection(
            lambda: Client(request, on_text), "127.0.0.1", port
        )
        if await asyncio.wait_for(client.opened, 30):
            return client
    except (OSError, TimeoutError):
        return None
    client.close()
    return None


async def open_many(port: int, path: str, cookie: str, sockets: int, on_text: Any) -> list[Client]:
    clients: list[Client | None] = []
    for batch in range(0, sockets, 50):
        clients += await asyncio.gather(
            *(
                open_socket(port, path, cookie, lambda p, t, i=i: on_text(i, p, t))
                for i in range(batch, min(batch + 50, sockets))
            )
        )
    return [c for c in clients if c is not None]
