"""Django's ASGI handler, with the middleware chain and the view on one thread hop.

Django adapts each middleware to the server's mode. Under ASGI, every middleware built on
``MiddlewareMixin`` (sessions, CSRF, auth, messages, security, clickjacking, and ours)
is run "async", which means each of its ``process_request`` and ``process_response``
goes to the request's worker thread and back: about fifteen thread hops for one API
read, each a queue, a wake-up of the event loop and a context copy. The views are
synchronous too (the ORM is), so the request ends up on that worker thread anyway.

:class:`OneHopASGIHandler` builds the chain in Django's synchronous mode, as WSGI does,
and enters it once: one hop per request, the same thread for all of its synchronous
code as before (Django's per-request ``ThreadSensitiveContext`` is unchanged), the same
middleware order and behaviour. An ``async def`` view still works: Django runs it on the
event loop with ``async_to_sync`` while the request's thread waits, as under WSGI.

A streaming response with a synchronous iterator (a file, a generator) is read chunk by
chunk in the request's thread, so it neither blocks the event loop nor makes Django warn.
Websockets do not pass through here (channels routes them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http.response import HttpResponseBase

_DONE = object()


def _next_chunk(chunks: Iterator[Any]) -> Any:
    return next(chunks, _DONE)


async def chunks_in_thread(content: Iterable[Any]) -> AsyncIterator[Any]:
    """``content``'s chunks, each read in a worker thread (one in memory at a time).

    The request's own thread (thread-sensitive): a generator that uses the ORM gets the
    request's connection, which ``request_finished`` then closes (on any other thread
    it would stay open, outside the pool, for good)."""
    chunks = iter(content)
    read = sync_to_async(_next_chunk, thread_sensitive=True)
    while (chunk := await read(chunks)) is not _DONE:
        yield chunk


class OneHopASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)  # not ASGIHandler's: that loads the chain async
        self.load_middleware(is_async=False)
        chain: Any = vars(self)["_middleware_chain"]  # set by load_middleware
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        if response.streaming and not response.is_async:  # type: ignore[attr-defined]
            response.streaming_content = chunks_in_thread(response.streaming_content)  # type: ignore[attr-defined]
        await super().send_response(response, send)
