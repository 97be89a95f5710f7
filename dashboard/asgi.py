"""ASGI entry point: HTTP through Django, websockets through channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

# Django's handler, entering the (synchronous) middleware chain once per request.
from dashboard.handler import OneHopASGIHandler  # noqa: E402

django_asgi_app = OneHopASGIHandler()

# Imported after Django is set up: routing imports models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files: whitenoise middleware (dashboard.staticfiles) when SERVE_STATIC;
        # SERVE_STATIC=0 leaves them to a front proxy.
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# Checkpoint retention (CHECKPOINT_KEEP_LAST / CHECKPOINT_MAX_AGE) runs in the server.
from dashboard.checkpoints import retention  # noqa: E402

retention.start_if_configured()

# The fleet over Redis (REDIS_URL): this process joins the consumer group of reports.
from dashboard.fleet import runtime as fleet_runtime  # noqa: E402

fleet_runtime.start()

if settings.RESILIENCE_DEMO:
    from dashboard import demo

    demo.start()
