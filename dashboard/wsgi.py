"""WSGI entry point (no websockets: the live pages need ``dashboard.asgi``).

Importing it starts nothing; the first request starts the runtime
(:mod:`dashboard.runtime`) and then builds Django's handler, so that the handler loads
the middleware the span pipeline adds (see ``dashboard.asgi``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django.setup(set_prefix=False)

_lock = threading.Lock()
_handler: WSGIHandler | None = None


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    global _handler
    from dashboard import runtime

    if runtime.current() is None:
        runtime.start()
    if _handler is None:
        with _lock:
            if _handler is None:
                _handler = WSGIHandler()
    return _handler(environ, start_response)
