"""One HTTP request driven through an ASGI application in process, as a server would."""

from __future__ import annotations

import asyncio
from typing import Any


async def asgi_request(
    application: Any,
    path: str,
    *,
    host: str = "localhost",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> list[dict[str, Any]]:
    """The messages ``application`` sends for one GET of ``path``; the client stays
    connected (no disconnect) until the response is complete."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode()), *headers],
        "client": ("127.0.0.1", 50000),
        "server": (host, 8000),
    }
    delivered = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the handler cancels this wait when it is done
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await application(scope, receive, send)
    return messages


def response_of(messages: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (names lower-cased) and the whole body of a response's messages."""
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {bytes(name).lower(): bytes(value) for name, value in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(start["status"]), headers, body
