"""ASGI entry point: HTTP through Django, websockets through channels.

Importing this module starts nothing (no thread, task or subscription). The process's
runtime (:mod:`dashboard.runtime`: cluster factories, bus listeners, span pipeline,
alert evaluator, checkpoint retention, the demo) starts when the server starts serving:

- on the ASGI ``lifespan.startup`` event (uvicorn, hypercorn), and stops on
  ``lifespan.shutdown``;
- under daphne, which sends no lifespan events, on the first connection (HTTP or
  websocket) of the process. That is also right for servers that fork workers after
  importing the application: each worker starts its own runtime, with its own pid.

Starting is idempotent and cheap once done (one attribute check per connection).
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django.setup(set_prefix=False)  # what get_asgi_application() does, less building the handler

# Imported after Django is set up: routing imports models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard import runtime  # noqa: E402
from dashboard.handler import OneHopASGIHandler  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402

Scope = dict[str, Any]


class DjangoOnFirstUse:
    """Django's ASGI handler (``dashboard.handler``: the middleware chain entered in one
    thread hop), built at the first request, after the runtime started.

    The span pipeline instruments Django by adding a middleware to ``MIDDLEWARE``, and
    a handler reads its middleware once, when it is built: one built at import (before
    the runtime) would serve every request untraced.
    """

    def __init__(self) -> None:
        self.handler: OneHopASGIHandler | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.handler is None:
            self.handler = OneHopASGIHandler()
        await self.handler(scope, receive, send)


django_asgi_app = DjangoOnFirstUse()

router = ProtocolTypeRouter(
    {
        # Static files: whitenoise middleware (dashboard.staticfiles) when SERVE_STATIC;
        # SERVE_STATIC=0 leaves them to a front proxy.
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)


class StartRuntime:
    """Starts :mod:`dashboard.runtime` at lifespan startup or on the first connection."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if runtime.current() is None:
            runtime.start()
        await self.app(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    runtime.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                started = runtime.current()
                if started is not None:
                    await started.astop()
                    runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


application = StartRuntime(router)
