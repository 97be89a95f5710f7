"""The framework's floor for the HTTP bench: Django with one view and nothing else.

``python -m daphne bench._bare_site:application`` serves ``GET /`` as
``{"status": "ok"}``: no middleware, no database, no apps; the same Django and the same
daphne as the dashboard, so the ratio to it is what the dashboard's own layers cost.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-bare-site-only-not-a-secret-0123456789abcdef",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
)


def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("", status)]

from django.core.asgi import get_asgi_application  # noqa: E402  (after configure)

application = get_asgi_application()
