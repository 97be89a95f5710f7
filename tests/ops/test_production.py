"""The README's "Running in production" recipe, booted on loopback.

PostgreSQL and Redis of their own, ``DEBUG=0``, ``collectstatic`` into ``STATIC_ROOT``,
whitenoise, a superuser, daphne: every page answers 200 after logging in, and a static
file is served compressed, content-hashed and cached for a year. Without PostgreSQL or
redis-server the test skips (fails under CI=true).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ops.conftest import ROOT, missing, wait_until
from tests.resilience.redis_server import RedisServer, redis_server_path
from tests.services import ServiceMissing, free_port, postgres_start, postgres_stop

PASSWORD = "production-recipe-pw-123"
PAGES = [
    "/",
    "/breakers/",
    "/limiters/",
    "/charts/",
    "/traces/",
    "/simulation/",
    "/alerts/",
    "/admin/",
    "/admin/checkpoints/checkpoint/",
    "/api/observability/docs",
]


@dataclass
class Production:
    url: str
    static_root: Path
    opener: urllib.request.OpenerDirector


def _run(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _login(url: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    form = {"username": "ops", "password": PASSWORD, "csrfmiddlewaretoken": token[1]}
    request = urllib.request.Request(
        f"{url}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{url}/accounts/login/"},
    )
    with opener.open(request, timeout=10) as reply:
        assert reply.url.rstrip("/") == url, "login did not redirect to the overview"
    return opener


@pytest.fixture(scope="module")
def production() -> Iterator[Production]:
    binary = redis_server_path()
    if binary is None:
        missing("redis-server")
    directory = Path(tempfile.mkdtemp(prefix="resilience-prod-"))
    directory.chmod(0o755)  # the postgres user reads its cluster directory
    redis = RedisServer(binary)
    process: subprocess.Popen[bytes] | None = None
    try:
        try:
            database_url = postgres_start(directory / "pg")
        except ServiceMissing:
            missing("PostgreSQL")
        redis.start()
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "SECRET_KEY": "prod-" + uuid.uuid4().hex,
            "CHECKPOINT_SIGNING_KEY": "signing-" + uuid.uuid4().hex,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "STATIC_ROOT": str(directory / "static"),
            "MEDIA_ROOT": str(directory / "media"),
            "RESILIENCE_DEMO": "0",
            "DJANGO_SUPERUSER_USERNAME": "ops",
            "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
            "PYTHONPATH": str(ROOT),
        }
        _run(env, "migrate", "--noinput")
        _run(env, "collectstatic", "--noinput")
        _run(env, "createsuperuser", "--noinput")
        log = directory / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "dashboard.asgi:application"],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/accounts/login/", timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_until(up, 60, "the production server")
        yield Production(url, directory / "static", _login(url))
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(15)
        redis.stop()
        postgres_stop(directory / "pg")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers(production: Production, page: str) -> None:
    with production.opener.open(f"{production.url}{page}", timeout=15) as reply:
        assert reply.status == 200
        assert reply.url == f"{production.url}{page}"  # not redirected to the login page


def test_static_files_are_compressed_hashed_and_cached(production: Production) -> None:
    page = production.opener.open(f"{production.url}/", timeout=10).read().decode()
    match = re.search(r"/static/dashboard/(dashboard\.[0-9a-f]{12}\.css)", page)
    assert match is not None, "the page links no hashed dashboard.css"
    assert (production.static_root / "dashboard" / match[1]).exists()
    request = urllib.request.Request(
        f"{production.url}/static/dashboard/{match[1]}", headers={"Accept-Encoding": "gzip"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Encoding"] == "gzip"
        assert "immutable" in reply.headers["Cache-Control"]
        assert "max-age=315360000" in reply.headers["Cache-Control"]
