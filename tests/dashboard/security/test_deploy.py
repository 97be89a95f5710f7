"""The README's production settings pass `manage.py check --deploy` without a warning;
a Content-Security-Policy is on every page; Redis without a password is warned about."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from dashboard import cluster
from dashboard.alerts.delivery import banner_html

ROOT = Path(__file__).resolve().parents[3]


def documented_production_env() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Production settings", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the README's production section lost its settings block"
    env: dict[str, str] = {}
    for line in block.group(1).splitlines():
        name, _, value = line.partition("=")
        if name.strip():
            env[name.strip()] = secrets.token_urlsafe(60) if value.startswith("<") else value
    return env


def test_the_documented_production_settings_pass_check_deploy(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECURE_", "SESSION_", "CSRF_", "DEBUG"))
    }
    env.update(documented_production_env())
    env["PYTHONPATH"] = str(ROOT)
    env["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    env["SECRET_KEY_FILE"] = str(tmp_path / "unused")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_the_documented_settings_are_read_under_djangos_names() -> None:
    env = documented_production_env()
    code = (
        "from django.conf import settings as s;"
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD,"
        " s.SECURE_PROXY_SSL_HEADER, s.TRUSTED_PROXIES)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == (
        "True True True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') "
        "['127.0.0.1/32', '::1/128']"
    )


@pytest.mark.django_db
def test_pages_carry_a_csp_without_inline_scripts(admin_client: Client) -> None:
    response = admin_client.get("/")
    policy = response["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]*)", policy)
    assert script_src is not None and "'unsafe-inline'" not in script_src.group(1)
    assert "'unsafe-eval'" not in policy
    assert "<script>" not in response.content.decode()


@pytest.mark.django_db
def test_the_alert_banner_has_no_inline_handler() -> None:
    from dashboard.alerts.models import Alert, AlertRule

    rule = AlertRule.objects.create(name="r", kind="breaker_open", severity="critical")
    from django.utils import timezone

    alert = Alert.objects.create(
        rule=rule, subject="s", severity="critical", started_at=timezone.now()
    )
    for event in ("firing", "resolved"):
        html = banner_html(alert, event)
        assert not re.search(r"\son[a-z]+=", html), html
        assert "data-dismiss-banner" in html
    assert "data-dismiss-banner" in (ROOT / "static/dashboard/live.js").read_text()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("redis://10.0.0.5:6379/0", True),
        ("redis://redis.internal:6379/0", True),
        ("redis://127.0.0.1:6379/0", False),
        ("redis://localhost:6379/0", False),
        ("redis://:s3cret@10.0.0.5:6379/0", False),
        ("rediss://:s3cret@redis.internal:6380/0", False),
    ],
)
def test_a_redis_url_without_a_password_off_loopback_is_warned_about(
    url: str, warned: bool, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from resilience.redis import uninstall

    settings.REDIS_URL = url
    try:
        assert cluster.start()
    finally:
        uninstall()
    assert ("without a password" in caplog.text) is warned
