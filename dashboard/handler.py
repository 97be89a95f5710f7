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

Django also gives each request a thread of its own: a new single-thread executor per
request, and a second thread at the end to join it (asgiref's ``ThreadSensitiveContext``
without an executor). Starting and joining those two threads cost about as much CPU
as a cheap API read itself. :class:`RequestThreads` keeps the idle executors instead,
and the handler passes one to ``ThreadSensitiveContext(executor=...)`` per request: a
request still runs all its synchronous code on one thread, that no other request uses
while it is in flight, as under a threaded WSGI server (whose threads also serve one
request after another). Thread-local state that outlives a request is what a WSGI
thread keeps too: Django's database connection, which ``request_started`` and
``request_finished`` check and close (``close_old_connections``), into the pool of
:mod:`dashboard.db`. An executor with work still running when its request ends (a
client that disconnected while the view ran) is not reused: it is shut down once that
work ends, as Django would.

Concurrency: the executors are taken and given back on the event loop's thread; the
idle list has its own lock anyway (a second loop in the process must not corrupt it).

A streaming response with a synchronous iterator (a file, a generator) is read chunk by
chunk in the request's thread, so it neither blocks the event loop nor makes Django warn.
Websockets do not pass through here (channels routes them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
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


class RequestExecutor(ThreadPoolExecutor):
    """One thread; counts the calls submitted and not finished yet."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.pending = 0  # calls submitted, not finished (under _pending_lock)
        self._pending_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._pending_lock:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self._pending_lock:
            self.pending -= 1


class RequestThreads:
    """Idle request executors, at most ``keep`` of them (more are shut down).

    Fork-aware: a forked child (daphne's test server, a pre-forking server) inherits the
    executors but not their threads, so work given to them would never run. The child
    forgets them (without joining threads it does not have) and starts its own.
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._idle: list[RequestExecutor] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> RequestExecutor:
        with self._lock:
            if self._pid != os.getpid():  # forked: these executors' threads are gone
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop()
        return RequestExecutor()

    def give(self, executor: RequestExecutor) -> None:
        """Keep ``executor`` for another request if it is idle, else let it end."""
        if executor.pending == 0:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(executor)
                    return
        executor.shutdown(wait=False)  # its thread ends after its last call

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)


class OneHopASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)  # not ASGIHandler's: that loads the chain async
        self.load_middleware(is_async=False)
        chain: Any = vars(self)["_middleware_chain"]  # set by load_middleware
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)
        self.threads = RequestThreads()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give(executor)

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        if response.streaming and not response.is_async:  # type: ignore[attr-defined]
            response.streaming_content = chunks_in_thread(response.streaming_content)  # type: ignore[attr-defined]
        await super().send_response(response, send)
