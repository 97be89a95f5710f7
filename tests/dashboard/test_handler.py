"""dashboard/handler.py: the middleware chain entered once per request."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref import sync as asgiref_sync
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from dashboard.db import pool
from dashboard.handler import OneHopASGIHandler, RequestThreads, chunks_in_thread
from tests.asgi import asgi_request, response_of

seen_threads: list[int] = []


class RecordingMiddleware:
    """A plain sync-and-async middleware that notes the thread it runs on."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        seen_threads.append(threading.get_ident())
        return self.get_response(request)


def plain(request: HttpRequest) -> HttpResponse:
    seen_threads.append(threading.get_ident())
    return HttpResponse(f"ok {request.path}")


async def coroutine_view(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse("async ok")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for n in range(3):
            seen_threads.append(threading.get_ident())
            yield f"part{n};".encode()

    return StreamingHttpResponse(chunks())


stream_connections: list[Any] = []


def db_stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            count = User.objects.count()
            stream_connections.append(connection.connection)
            yield f"{count};".encode()

    return StreamingHttpResponse(chunks())


both_in_flight = threading.Barrier(2, timeout=30)  # the timeout only ends a broken run


def meet(request: HttpRequest) -> HttpResponse:
    seen_threads.append(threading.get_ident())
    both_in_flight.wait()  # returns only once the other request is in its view too
    return HttpResponse("met")


query_connections: list[Any] = []


def query(request: HttpRequest) -> HttpResponse:
    query_connections.append((threading.get_ident(), User.objects.count(), connection.connection))
    return HttpResponse("queried")


urlpatterns = [
    path("plain/", plain),
    path("meet/", meet),
    path("query/", query),
    path("async/", coroutine_view),
    path("stream/", stream),
    path("db-stream/", db_stream),
]

SETTINGS = {
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        f"{__name__}.RecordingMiddleware",
    ],
}


async def get(application: Any, url: str) -> tuple[int, bytes, list[dict[str, Any]]]:
    messages = await asgi_request(application, url, host="testserver")
    status, _, body = response_of(messages)
    return status, body, messages


@pytest.fixture
def counted_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every sync_to_async call made while a request is handled."""
    calls: list[str] = []
    original = asgiref_sync.SyncToAsync.__call__

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asgiref_sync.SyncToAsync, "__call__", counting)
    return calls


@override_settings(**SETTINGS)
async def test_the_whole_chain_and_the_view_run_in_one_hop_on_one_thread(
    counted_hops: list[str],
) -> None:
    seen_threads.clear()
    application = OneHopASGIHandler()
    counted_hops.clear()
    status, body, _ = await get(application, "/plain/")
    assert (status, body) == (200, b"ok /plain/")
    chain_hops = [c for c in counted_hops if "log_response" not in c and "close" not in c]
    # Django's stock handler: two hops per MiddlewareMixin middleware plus the view.
    assert len([c for c in chain_hops if "signal" not in c.lower()]) == 1, counted_hops
    assert len(set(seen_threads)) == 1
    assert seen_threads[0] != threading.get_ident()  # not on the event loop's thread


@override_settings(**SETTINGS)
async def test_middleware_still_applies_its_behaviour() -> None:
    application = OneHopASGIHandler()
    status, _, messages = await get(application, "/plain/")
    _, headers, _ = response_of(messages)
    assert status == 200
    assert headers[b"x-content-type-options"] == b"nosniff"  # SecurityMiddleware ran
    status, _, messages = await get(application, "/plain")  # CommonMiddleware: APPEND_SLASH
    assert status == 301
    assert response_of(messages)[1][b"location"] == b"/plain/"


@override_settings(**SETTINGS)
async def test_an_async_view_still_works() -> None:
    status, body, _ = await get(OneHopASGIHandler(), "/async/")
    assert (status, body) == (200, b"async ok")


@override_settings(**SETTINGS)
async def test_a_sync_stream_is_read_off_the_event_loop_without_a_warning() -> None:
    seen_threads.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when it must consume a sync iterator
        status, body, messages = await get(OneHopASGIHandler(), "/stream/")
    assert (status, body) == (200, b"part0;part1;part2;")
    assert threading.get_ident() not in seen_threads
    assert len([m for m in messages if m["type"] == "http.response.body"]) >= 3  # streamed


async def test_chunks_in_thread_reads_lazily() -> None:
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(5):
            produced.append(n)
            yield n

    reader = chunks_in_thread(numbers())
    assert await reader.__anext__() == 0
    assert produced == [0]  # one chunk at a time, not the whole body
    assert [n async for n in reader] == [1, 2, 3, 4]


@pytest.mark.django_db(transaction=True)
@override_settings(**SETTINGS)
async def test_a_stream_that_queries_gives_its_connection_back_at_the_end() -> None:
    """The chunks ran on arbitrary executor threads: a connection the generator opened
    there was never closed nor pooled (request_finished closes the request thread's)."""
    for raw in pool.clear():
        raw.close()
    stream_connections.clear()
    status, body, _ = await get(OneHopASGIHandler(), "/db-stream/")
    assert (status, body) == (200, b"0;0;0;")
    returned = pool.clear()
    for raw in {id(c): c for c in stream_connections}.values():
        assert any(raw is r for r in returned), "a connection the stream used was kept"
    for raw in returned:
        raw.close()


@override_settings(**SETTINGS)
async def test_requests_one_after_another_reuse_one_thread_and_start_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application = OneHopASGIHandler()
    await get(application, "/plain/")  # the first request starts the thread
    started: list[str] = []
    original = threading.Thread.start

    def counting(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", counting)
    seen_threads.clear()
    for _ in range(3):
        status, _, _ = await get(application, "/plain/")
        assert status == 200
    # Django's stock handler starts two threads per request (the request's, a joiner).
    assert started == []
    assert len(set(seen_threads)) == 1
    assert application.threads.idle_count() == 1


@override_settings(**SETTINGS)
async def test_requests_in_flight_together_run_on_threads_of_their_own() -> None:
    seen_threads.clear()
    both_in_flight.reset()
    application = OneHopASGIHandler()
    first, second = await asyncio.gather(get(application, "/meet/"), get(application, "/meet/"))
    assert first[:2] == second[:2] == (200, b"met")
    assert len(set(seen_threads)) == 2
    assert application.threads.idle_count() == 2


@pytest.mark.django_db(transaction=True)
@override_settings(**SETTINGS)
async def test_a_reused_thread_gives_its_connection_back_after_each_request() -> None:
    for raw in pool.clear():
        raw.close()
    query_connections.clear()
    application = OneHopASGIHandler()
    for _ in range(2):
        status, _, _ = await get(application, "/query/")
        assert status == 200
        returned = pool.clear()  # request_finished closed it into the pool
        assert [raw is query_connections[-1][2] for raw in returned] == [True]
        for raw in returned:
            raw.close()
    assert query_connections[0][0] == query_connections[1][0]  # the same thread


def test_an_executor_still_running_a_call_is_not_reused() -> None:
    """A client that disconnects while its view runs: the view's thread is left to end."""
    threads = RequestThreads()
    busy = threads.take()
    release = threading.Event()
    running = busy.submit(release.wait)
    threads.give(busy)
    assert threads.idle_count() == 0
    assert threads.take() is not busy
    release.set()
    running.result()


def test_idle_executors_are_reused_up_to_the_bound() -> None:
    threads = RequestThreads(keep=2)
    executors = [threads.take() for _ in range(3)]
    for executor in executors:
        executor.submit(int).result()
        threads.give(executor)
    assert threads.idle_count() == 2
    assert threads.take() is executors[1]  # the last kept one
    with pytest.raises(RuntimeError):  # the third was shut down
        executors[2].submit(int)


def test_a_forked_child_does_not_take_the_parents_idle_executors() -> None:
    """The child has none of the parent's threads: work given to an inherited executor
    would never run (daphne's test server forks a process that served requests)."""
    import os
    import warnings

    threads = RequestThreads()
    parent = threads.take()
    parent.submit(int).result()
    threads.give(parent)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: a fresh executor whose work runs
        ok = False
        try:
            executor = threads.take()
            ok = executor is not parent and executor.submit(lambda: 7).result(timeout=10) == 7
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert threads.take() is parent  # the parent keeps its own
