"""Settings of the operations block, read from the environment in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, django
django.setup()
from dashboard import runtime
runtime.start(runtime.Features.from_settings(serving=False))  # the server's start
from django.conf import settings
from resilience import telemetry
print(json.dumps({
    "middleware": settings.MIDDLEWARE,
    "storage": settings.STORAGES["staticfiles"]["BACKEND"],
    "finders": settings.WHITENOISE_USE_FINDERS,
    "application": telemetry.metrics.collector.application,
    "keep_last": settings.CHECKPOINT_KEEP_LAST,
    "max_age": settings.CHECKPOINT_MAX_AGE,
}))
"""
STATIC = "dashboard.staticfiles.StaticFilesMiddleware"
HTTP = "dashboard.api.http_metrics.HttpMetricsMiddleware"
SECURITY = "django.middleware.security.SecurityMiddleware"


def probe(**env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHECKPOINT_"))}
    for name in ("SERVE_STATIC", "STATIC_ROOT", "METRICS_APPLICATION", "RESILIENCE_DEMO"):
        base.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "dashboard.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_defaults_serve_static_from_the_finders_and_label_the_application() -> None:
    found = probe()
    middleware = found["middleware"]
    assert isinstance(middleware, list)
    after = middleware.index(SECURITY) + 1
    assert middleware[after : after + 2] == [STATIC, HTTP]
    assert found["finders"] is True
    assert found["storage"] == "django.contrib.staticfiles.storage.StaticFilesStorage"
    assert found["application"] == "resilience-dashboard"
    assert (found["keep_last"], found["max_age"]) == (10, "7d")


def test_static_root_switches_to_compressed_hashed_files(tmp_path: Path) -> None:
    found = probe(STATIC_ROOT=str(tmp_path))
    assert found["storage"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert found["finders"] is False


def test_serve_static_off_leaves_static_files_to_a_proxy() -> None:
    middleware = probe(SERVE_STATIC="0")["middleware"]
    assert isinstance(middleware, list)
    assert STATIC not in middleware
    assert middleware[middleware.index(SECURITY) + 1] == HTTP


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OTEL_SERVICE_NAME": "shop"}, "shop"),
        ({"METRICS_APPLICATION": "a", "OTEL_SERVICE_NAME": "b"}, "a"),
    ],
)
def test_the_application_label_comes_from_the_environment(
    env: dict[str, str], expected: str
) -> None:
    assert probe(**env)["application"] == expected


def test_the_demo_bounds_checkpoints_to_an_hour() -> None:
    found = probe(RESILIENCE_DEMO="1", CHECKPOINT_KEEP_LAST="3")
    assert (found["keep_last"], found["max_age"]) == (3, "1h")
