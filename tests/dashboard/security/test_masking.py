"""Secrets inside values are masked before a span is stored, not only secret keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from dashboard.traces import conf, tracing
from dashboard.traces.masking import MASK, Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.processor import DatabaseSpanProcessor

SECRETS = {
    "api": "k3y-" + "A" * 20,
    "pw": "hunter2-" + "B" * 10,
    "openai": "sk-proj-" + "C" * 30,
    "github": "ghp_" + "D" * 36,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
    "rdt": "rdt_0123456789abcdef_" + "E" * 43,
    "bearer": "F" * 24,
}


@pytest.fixture
def masker() -> Masker:
    return Masker(conf.DEFAULT_MASKED_KEYS)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            f"/accounts/login/?next=/&api_key={SECRETS['api']}&password={SECRETS['pw']}",
            f"/accounts/login/?next=/&api_key={MASK}&password={MASK}",
        ),
        (
            f"login failed: password={SECRETS['pw']} user=bob",
            f"login failed: password={MASK} user=bob",
        ),
        (f"Authorization: Bearer {SECRETS['bearer']}", f"Authorization: Bearer {MASK}"),
        ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {MASK}"),
        (f"calling with {SECRETS['openai']}", f"calling with {MASK}"),
        (f"{SECRETS['github']} expired", f"{MASK} expired"),
        (f"jwt={SECRETS['jwt']}", f"jwt={MASK}"),
        (f"token {SECRETS['rdt']} revoked", f"token {MASK} revoked"),
        ('{"secret": "abc", "user": "bob"}', f'{{"secret": {MASK}, "user": "bob"}}'),
        ("https://bob:pa55word@hooks.example.com/x", f"https://bob:{MASK}@hooks.example.com/x"),
        ("apiKey=zzz&x=1", f"apiKey={MASK}&x=1"),
        # Left alone:
        ("GET /traces/?page=2", "GET /traces/?page=2"),
        ("token_bucket refilled: 5 of 10", "token_bucket refilled: 5 of 10"),
        ("http://example.com:8080/path", "http://example.com:8080/path"),
    ],
)
def test_secrets_inside_values_are_masked(masker: Masker, text: str, masked: str) -> None:
    assert masker.mask_text(text) == masked


def test_mask_applies_to_values_and_sequences(masker: Masker) -> None:
    out = masker.mask(
        {"http.url": f"/x?token={SECRETS['api']}", "args": ("a", f"Bearer {SECRETS['bearer']}")}
    )
    assert out == {"http.url": f"/x?token={MASK}", "args": ["a", f"Bearer {MASK}"]}


def test_value_patterns_are_configurable(settings: Any) -> None:
    settings.TRACES_MASKED_VALUE_PATTERNS = [r"\bacme-[0-9]{6}\b"]
    masker = Masker(conf.masked_keys(), conf.masked_value_patterns())
    assert masker.mask_text("id acme-123456") == f"id {MASK}"
    assert SECRETS["github"] in masker.mask_text(SECRETS["github"])  # the defaults replaced
    settings.TRACES_MASKED_VALUE_PATTERNS = ["("]
    with pytest.raises(ImproperlyConfigured, match="regular expression"):
        conf.masked_value_patterns()


def login_view(request: HttpRequest) -> HttpResponse:
    raise ValueError(f"bad credentials: password={request.GET['password']}")


urlpatterns = [path("accounts/login/", login_view)]


@pytest.fixture
def installed() -> Iterator[DatabaseSpanProcessor]:
    processor = tracing.processor()
    assert processor is not None
    processor.enabled = True
    assert processor.force_flush()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    yield processor
    assert processor.force_flush()


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_a_request_url_and_its_exception_are_stored_without_the_secrets(
    installed: DatabaseSpanProcessor,
) -> None:
    client = Client(raise_request_exception=False)
    url = f"/accounts/login/?next=/&api_key={SECRETS['api']}&password={SECRETS['pw']}"
    client.get(url, HTTP_AUTHORIZATION=f"Bearer {SECRETS['bearer']}")
    assert installed.force_flush()
    stored = json.dumps(
        [[s.attributes, s.events, s.status_message] for s in SpanRecord.objects.all()]
    )
    assert SpanRecord.objects.exists()
    assert "api_key=***" in stored
    for secret in (SECRETS["api"], SECRETS["pw"], SECRETS["bearer"]):
        assert secret not in stored
