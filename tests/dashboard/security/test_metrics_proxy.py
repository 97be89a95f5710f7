"""/metrics and client addresses behind a reverse proxy: TRUSTED_PROXIES decides."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory

from dashboard.client_ip import client_address

# A served /metrics reads the fleet's state from the database.
pytestmark = pytest.mark.django_db

TOKEN = "scrape-secret"


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        ([], "127.0.0.1", "6.6.6.6", "127.0.0.1"),  # header ignored: no proxy trusted
        (["10.0.0.0/8"], "127.0.0.1", "6.6.6.6", "127.0.0.1"),  # peer is not a proxy
        (["127.0.0.1/32"], "127.0.0.1", "6.6.6.6", "6.6.6.6"),
        # The client wrote "127.0.0.1" itself; the proxy appended what it saw.
        (["127.0.0.1/32"], "127.0.0.1", "127.0.0.1, 6.6.6.6", "6.6.6.6"),
        (["127.0.0.1/32", "10.0.0.0/8"], "127.0.0.1", "1.2.3.4, 6.6.6.6, 10.0.0.7", "6.6.6.6"),
        (["127.0.0.1/32"], "127.0.0.1", "", "127.0.0.1"),
        (["127.0.0.1/32"], "127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ],
)
def test_client_address_takes_the_rightmost_untrusted_hop(
    settings: Any, proxies: list[str], remote: str, forwarded: str, expected: str
) -> None:
    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


def test_a_same_host_proxy_without_trusted_proxies_does_not_make_metrics_public(
    client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    settings.TRUSTED_PROXIES = []
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert response.status_code == 403


def test_a_trusted_proxy_forwarding_an_outside_client_is_refused(
    client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    outside = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert outside.status_code == 403
    # A spoofed loopback entry on the left changes nothing.
    spoofed = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1, 6.6.6.6"
    )
    assert spoofed.status_code == 403
    inside = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert inside.status_code == 200


def test_without_a_token_a_non_loopback_listener_refuses_and_logs(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.METRICS_TOKEN = ""
    response = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", SERVER_NAME="10.0.0.5", HTTP_HOST="localhost"
    )
    assert response.status_code == 403
    assert "METRICS_TOKEN" in caplog.text and "10.0.0.5" in caplog.text
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", SERVER_NAME="127.0.0.1").status_code == 200
    )


def test_with_a_token_a_non_loopback_listener_serves_scrapers(
    client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = TOKEN
    response = client.get(
        "/metrics",
        REMOTE_ADDR="10.0.0.9",
        SERVER_NAME="10.0.0.5",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )
    assert response.status_code == 200
