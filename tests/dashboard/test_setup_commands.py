from __future__ import annotations

import os
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_demo_admin_is_created_once_with_a_printed_password(settings: Any) -> None:
    settings.DEMO_ADMIN_PASSWORD = ""
    settings.DEMO_ADMIN_USER = "demo"
    out = StringIO()
    call_command("ensure_demo_admin", stdout=out)
    password = out.getvalue().split("with password ")[1].split("'")[1]
    user = User.objects.get(username="demo")
    assert user.is_superuser and user.check_password(password)
    again = StringIO()
    call_command("ensure_demo_admin", stdout=again)
    assert "nothing to do" in again.getvalue()
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_demo_admin_password_can_come_from_the_settings(settings: Any) -> None:
    settings.DEMO_ADMIN_PASSWORD = "s3cret-from-env"
    out = StringIO()
    call_command("ensure_demo_admin", stdout=out)
    assert "s3cret-from-env" not in out.getvalue()
    assert User.objects.get(username="admin").check_password("s3cret-from-env")


def _settings_value(env: dict[str, str], expr: str) -> subprocess.CompletedProcess[str]:
    code = f"import dashboard.settings as s; print({expr})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_secret_key_is_generated_once_into_a_private_file_by_an_explicit_step(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["SECRET_KEY_FILE"] = str(tmp_path / "key")
    before = _settings_value(env, "repr(s.SECRET_KEY)")
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == "''" and not (tmp_path / "key").exists()

    step = [sys.executable, "-m", "dashboard.secret_key"]
    made = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "Wrote a new SECRET_KEY" in made.stdout
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    first = _settings_value(env, "s.SECRET_KEY")
    again = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True)
    assert "nothing to do" in again.stdout
    second = _settings_value(env, "s.SECRET_KEY")
    assert first.stdout == second.stdout and len(first.stdout.strip()) >= 50


def test_settings_defaults_are_safe_and_env_overrides_apply(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "REDIS_URL")}
    env["SECRET_KEY"] = "x" * 50
    default = _settings_value(
        env, "s.DEBUG, s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND']"
    )
    assert default.stdout.strip() == (
        "False dashboard.db.sqlite3 channels.layers.InMemoryChannelLayer"
    )
    env.update(
        DEBUG="true",
        REDIS_URL="redis://127.0.0.1:6390/0",
        DATABASE_URL="postgres://u:p@127.0.0.1:5433/db",
    )
    custom = _settings_value(
        env, "s.DEBUG, s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND']"
    )
    assert custom.stdout.strip() == (
        "True dashboard.db.postgresql channels_redis.core.RedisChannelLayer"
    )
    env["DEBUG"] = "maybe"
    bad = _settings_value(env, "s.DEBUG")
    assert bad.returncode != 0 and "DEBUG must be a boolean" in bad.stderr


def test_database_runs_in_its_configured_mode(db: None) -> None:
    """SQLite (the embedded default) in WAL mode; PostgreSQL when DATABASE_URL says so."""
    from django.db import connection

    expected = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    assert connection.vendor == expected
    with connection.cursor() as cursor:
        if expected == "sqlite":
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"
        else:
            cursor.execute("SHOW server_version")
            assert int(cursor.fetchone()[0].split(".")[0]) >= 15
