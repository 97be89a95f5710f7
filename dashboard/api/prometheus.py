"""``/metrics``: the Prometheus text exposition for scrapers, token or network restricted.

Settings:

``METRICS_TOKEN``
    A shared secret; a scrape sending ``Authorization: Bearer <token>`` is let in
    from any address. Default ``""`` (no token).
``METRICS_ALLOWED_NETWORKS``
    Client networks let in without a token (CIDRs or addresses). Default loopback
    only: ``["127.0.0.0/8", "::1/128"]``; ``[]`` lets no network in without the token.
``METRICS_REQUIRE_BOTH``
    ``True``: a scrape needs the token *and* an allowed address. Default ``False``.

``TRUSTED_PROXIES``
    The client address is ``REMOTE_ADDR``, or, when that is a listed proxy, the
    right-most untrusted ``X-Forwarded-For`` hop (:mod:`dashboard.client_ip`).

Without ``METRICS_TOKEN`` (and with only loopback networks allowed), the network rule
is trusted only where it can be: a request that arrived on a non-loopback local
address, or that carries forwarding headers from a peer not in ``TRUSTED_PROXIES``
(a reverse proxy on the same host makes every client look like 127.0.0.1), is refused
with 403 and logged. Set ``METRICS_TOKEN`` for any scrape that crosses a network.

Fleet primitives (worker processes' breakers and limiters) are rendered from the
database, the same in every process; ``?fleet=none|only`` places them so that they are
scraped once in total (:mod:`dashboard.fleet.metrics`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard.client_ip import client_address, forwarded_by_untrusted_peer, is_loopback
from dashboard.fleet import metrics as fleet_metrics
from resilience import telemetry

logger = logging.getLogger(__name__)

DEFAULT_NETWORKS = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks() -> list[Network]:
    value = getattr(settings, "METRICS_ALLOWED_NETWORKS", DEFAULT_NETWORKS)
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, Iterable):
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS must be a list, got {value!r}")
    try:
        return [ipaddress.ip_network(str(item).strip(), strict=False) for item in value]
    except ValueError as exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from exc


def client_allowed(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _token_state(request: HttpRequest, expected: str) -> bool | None:
    """True: the right token; False: a wrong one; None: no bearer token sent."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    return bool(expected) and hmac.compare_digest(credentials.strip().encode(), expected.encode())


def _denied(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _exposure(request: HttpRequest) -> str:
    """Why a loopback-only, token-less /metrics cannot trust this request ("" if it can)."""
    local = str(request.META.get("SERVER_NAME", ""))
    try:
        ipaddress.ip_address(local.strip("[]"))
    except ValueError:
        local = ""  # not an address (WSGI's configured name): nothing to judge by
    if local and not is_loopback(local.strip("[]")):
        return f"the server is reachable on the non-loopback address {local}"
    if forwarded_by_untrusted_peer(request):
        return "forwarding headers from a peer not in TRUSTED_PROXIES"
    return ""


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for scrapers allowed by token and/or network."""
    expected = str(getattr(settings, "METRICS_TOKEN", "") or "")
    token = _token_state(request, expected)
    if token is False:
        return _denied(401, "invalid metrics token")
    networks = allowed_networks()
    address = client_address(request)
    if not expected and all(net.is_loopback for net in networks):
        exposed = _exposure(request)
        if exposed:
            logger.warning(
                "/metrics refused to %s: %s; set METRICS_TOKEN (or TRUSTED_PROXIES)",
                address,
                exposed,
            )
            return _denied(403, "metrics need METRICS_TOKEN on this server")
    in_network = client_allowed(address, networks)
    if getattr(settings, "METRICS_REQUIRE_BOTH", False):
        allowed = bool(token) and in_network
    else:
        allowed = bool(token) or in_network
    if not allowed:
        if expected and not token:
            return _denied(401, "send Authorization: Bearer <METRICS_TOKEN>")
        return _denied(403, "metrics are not served to this address")
    try:
        fleet = fleet_metrics.scope(request.GET.get("fleet"))
    except ValueError as exc:
        return _denied(400, str(exc))
    own = b"" if fleet == "only" else telemetry.metrics.render_prometheus()
    fleet_text = b"" if fleet == "none" else fleet_metrics.render()
    return HttpResponse(own + fleet_text, content_type=telemetry.PROMETHEUS_CONTENT_TYPE)
