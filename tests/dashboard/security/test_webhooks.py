"""Alert webhooks cannot be used to reach the server's own network (SSRF), and their
secrets and signatures hold up."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from dashboard.alerts import webhook_http
from dashboard.alerts.delivery import (
    GENERIC_FAILURE,
    DeliveryPolicy,
    Notifier,
    sign,
    verify_signature,
)
from dashboard.alerts.models import Delivery, NotificationChannel
from dashboard.api import testing
from tests.clock import FakeClock
from tests.dashboard.alerts.test_delivery import Receiver, closed_port_url, firing_alert

pytestmark = pytest.mark.django_db


def webhook(url: str, name: str = "ops") -> NotificationChannel:
    return NotificationChannel.objects.create(name=name, kind="webhook", url=url)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.0.1",
        "::1",
        "fd12::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "169.254.169.254",
        "fd00:ec2::254",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "100.100.100.200",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(webhook_http.UnsafeWebhook):
        webhook_http.check_address(address, allow_private=False)


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "fe80::1", "224.0.0.1", "0.0.0.0"]
)
def test_metadata_link_local_and_multicast_stay_refused_when_private_is_allowed(
    address: str,
) -> None:
    with pytest.raises(webhook_http.UnsafeWebhook):
        webhook_http.check_address(address, allow_private=True)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "::1", "fd12::1"])
def test_private_addresses_pass_when_allowed(address: str) -> None:
    webhook_http.check_address(address, allow_private=True)


def test_public_addresses_pass() -> None:
    webhook_http.check_address("93.184.216.34", allow_private=False)
    webhook_http.check_address("2606:2800:220:1::1", allow_private=False)


def test_a_name_is_refused_if_any_of_its_addresses_is_internal() -> None:
    target = webhook_http.parse_url("https://hooks.example.com/x")
    with pytest.raises(webhook_http.UnsafeWebhook, match="127.0.0.1"):
        webhook_http.resolve(
            target, allow_private=False, resolver=lambda h, p: ["93.184.216.34", "127.0.0.1"]
        )


def test_delivery_to_loopback_is_refused_by_default_and_nothing_is_sent() -> None:
    with Receiver() as receiver:
        [delivery] = Notifier().notify(firing_alert(webhook(receiver.url)), "firing")
    assert delivery.outcome == Delivery.Outcome.FAILED
    assert receiver.requests == []
    assert delivery.error == GENERIC_FAILURE
    assert "loopback or private" in delivery.detail


def test_viewers_see_a_generic_error_not_the_port_scan_result(client: Client) -> None:
    # A closed port: the detail says "Connection refused", which maps an internal port.
    with pytest.MonkeyPatch.context() as patch:
        from django.conf import settings

        patch.setattr(settings, "ALERTS_WEBHOOK_ALLOW_PRIVATE", True, raising=False)
        notifier = Notifier(sleep=lambda s: None, policy=DeliveryPolicy(attempts=1))
        [delivery] = notifier.notify(firing_alert(webhook(closed_port_url())), "firing")
    assert "refused" in delivery.detail.lower()
    client.force_login(testing.make_user("viewer", "dashboard.view_dashboard"))
    api = client.get("/api/observability/alerts").content.decode()
    page = client.get("/alerts/").content.decode()
    for shown in (api, page):
        assert "refused" not in shown.lower() and "Errno" not in shown
        assert "delivery failed" in shown


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once; the socket opens to that address."""
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    real = socket.getaddrinfo

    def no_name_lookups(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host != "hooks.example", "the name was resolved a second time"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_name_lookups)
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        status = webhook_http.post(
            f"http://hooks.example:{port}/hook",
            b"{}",
            {"Content-Type": "application/json"},
            timeout=5,
            allow_private=True,
            resolver=resolver,
        )
    assert status == 200
    assert lookups == ["hooks.example"]
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example:{port}"


def test_redirects_are_not_followed(settings: Any) -> None:
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as target:

        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(302)
                self.send_header("Location", target.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            [delivery] = Notifier().notify(firing_alert(webhook(url)), "firing")
        finally:
            server.shutdown()
            server.server_close()
    assert delivery.outcome == Delivery.Outcome.FAILED
    assert "redirect" in delivery.detail
    assert target.requests == []


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """Accepts, then sends one byte of a status line every 50 ms, forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(b"H")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop.set()
    listener.close()
    thread.join(5)


def test_a_dripping_receiver_is_cut_at_the_total_deadline(dripping_server: str) -> None:
    # Each byte arrives well within the per-socket timeout: only a total deadline stops it.
    with pytest.raises(TimeoutError, match="deadline"):
        webhook_http.post(dripping_server, b"{}", {}, timeout=0.5, allow_private=True)


def test_retries_stop_at_the_delivery_deadline(settings: Any) -> None:
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = True
    clock = FakeClock()
    policy = DeliveryPolicy(attempts=10, backoff=0.5, deadline=1.0)
    with Receiver(statuses=[503] * 10) as receiver:
        notifier = Notifier(sleep=clock.sleep, clock=clock, policy=policy)
        [delivery] = notifier.notify(firing_alert(webhook(receiver.url)), "firing")
    assert delivery.outcome == Delivery.Outcome.FAILED
    assert delivery.attempts == 2 and len(receiver.requests) == 2
    assert "deadline" in delivery.detail
    assert sum(clock.sleeps) == 1.0


@pytest.mark.parametrize(
    ("url", "allow_private", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", True, "metadata"),
        ("http://127.0.0.1:6379/", False, "loopback or private"),
        ("http://[::1]:5432/", False, "loopback or private"),
        ("http://user:pw@hooks.example.com/", False, "credentials"),
    ],
)
def test_saving_a_channel_says_why_its_url_would_be_refused(
    settings: Any, url: str, allow_private: bool, message: str
) -> None:
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = allow_private
    with pytest.raises(ValidationError) as raised:
        NotificationChannel(name="x", kind="webhook", url=url).full_clean()
    assert message in " ".join(raised.value.message_dict["url"])


def test_a_private_receiver_saves_when_allowed(settings: Any) -> None:
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = True
    NotificationChannel(name="x", kind="webhook", url="http://10.0.0.5:8080/hook").full_clean()


def test_signatures_expire_after_the_tolerance() -> None:
    body = b'{"text": "x"}'
    sent = 1_700_000_000
    signature = sign("s3cret", str(sent), body)
    assert verify_signature("s3cret", str(sent), body, signature, now=sent + 299)
    assert not verify_signature("s3cret", str(sent), body, signature, now=sent + 301)
    assert not verify_signature("s3cret", str(sent), body, signature, now=sent - 301)
    assert verify_signature("s3cret", str(sent), body, signature, now=sent + 600, tolerance=900)
    assert not verify_signature("s3cret", "not-a-time", body, signature, now=sent)


def test_the_signing_secret_is_shown_once_after_creation() -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    form = client.get("/admin/alerts/notificationchannel/add/").content.decode()
    assert 'name="secret"' not in form
    response = client.post(
        "/admin/alerts/notificationchannel/add/",
        {"name": "ops", "kind": "webhook", "url": "https://93.184.216.34/hook", "enabled": "on"},
        follow=True,
    )
    channel = NotificationChannel.objects.get()
    assert channel.secret and channel.secret in response.content.decode()
    page = client.get(f"/admin/alerts/notificationchannel/{channel.pk}/change/")
    assert channel.secret not in page.content.decode()


def test_failure_detail_is_for_channel_editors_only(settings: Any) -> None:
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = True
    notifier = Notifier(sleep=lambda s: None, policy=DeliveryPolicy(attempts=1))
    channel = webhook(closed_port_url())
    [delivery] = notifier.notify(firing_alert(channel), "firing")
    editor = Client()
    editor.force_login(User.objects.create_superuser("root", password=None))
    page = editor.get(f"/admin/alerts/notificationchannel/{channel.pk}/change/").content.decode()
    assert re.search("refused", page, re.IGNORECASE)
    reader = testing.make_user("reader", "alerts.view_delivery", "alerts.view_notificationchannel")
    reader.is_staff = True
    reader.save()
    client = Client()
    client.force_login(reader)
    page = client.get(f"/admin/alerts/delivery/{delivery.pk}/change/").content.decode()
    assert "refused" not in page.lower()
    page = client.get(f"/admin/alerts/notificationchannel/{channel.pk}/change/").content.decode()
    assert "refused" not in page.lower()


def _self_signed(tmp_path: Any, name: str) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_connects_to_the_checked_address_and_verifies_the_name(tmp_path: Any) -> None:
    import ssl

    cert, key = _self_signed(tmp_path, "hooks.example")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment,misc,func-returns-value]
    with Receiver() as receiver:
        receiver.server.socket = server_context.wrap_socket(
            receiver.server.socket, server_side=True
        )
        port = receiver.server.server_address[1]
        trusted = ssl.create_default_context(cafile=cert)
        status = webhook_http.post(
            f"https://hooks.example:{port}/hook",
            b"{}",
            {},
            timeout=5,
            allow_private=True,
            resolver=lambda host, p: ["127.0.0.1"],
            tls_context=trusted,
        )
        assert status == 200
        assert seen_sni == ["hooks.example"]
        # The certificate is checked against the name, not the address.
        with pytest.raises(ssl.SSLCertVerificationError):
            webhook_http.post(
                f"https://other.example:{port}/hook",
                b"{}",
                {},
                timeout=5,
                allow_private=True,
                resolver=lambda host, p: ["127.0.0.1"],
                tls_context=trusted,
            )
