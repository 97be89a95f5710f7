"""Static files through whitenoise, without leaving the async request path.

whitenoise's middleware is sync-only: under daphne Django would run every request below
it in a thread, and its file responses are sync iterators that Django's ASGI handler
consumes with a warning. This subclass is async-capable: it looks the file up and opens
it in a worker thread, and hands Django an async iterator (what Django's own
``ASGIStaticFilesHandler`` does). Everything else (compression, hashed names,
far-future ``Cache-Control`` for hashed files, ``HEAD``, ranges) is whitenoise's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]

GetResponse = Callable[[HttpRequest], Any]


class StaticFilesMiddleware(WhiteNoiseMiddleware):  # type: ignore[misc]
    """:class:`whitenoise.middleware.WhiteNoiseMiddleware`, sync and async capable."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # DEBUG: looks on disk for every request
            response = await sync_to_async(self._static_response, thread_sensitive=False)(request)
        else:  # a dict lookup; only opening the file goes to a thread
            found = self.files.get(request.path_info)
            response = None
            if found is not None:
                response = await sync_to_async(self.serve, thread_sensitive=False)(found, request)
        if response is None:
            awaitable = cast(Awaitable[HttpResponseBase], self.get_response(request))
            return await awaitable
        if response.streaming and not response.is_async:
            response.streaming_content = _in_thread(response.streaming_content)
        return cast(HttpResponseBase, response)

    def _static_response(self, request: HttpRequest) -> Any:
        """whitenoise's response for a static file at this path, or None."""
        static_file = self.find_file(request.path_info)
        return None if static_file is None else self.serve(static_file, request)


async def _in_thread(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    parts: list[bytes] = await sync_to_async(_read_all, thread_sensitive=False)(chunks)
    for part in parts:
        yield part


def _read_all(chunks: Iterable[bytes]) -> list[bytes]:
    return list(chunks)
