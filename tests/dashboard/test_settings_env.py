"""Every variable of the README's settings table changes the Django setting it names.

Settings are read when ``dashboard.settings`` is imported, so each case imports it in a
child process with only that variable set (one child runs every case, each a fresh
import of the module file). ``EXAMPLES`` is the single mapping variable → setting →
example value; a README row without an entry, or a variable settings.py reads that the
README does not list, fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETTINGS = ROOT / "dashboard" / "settings.py"


class Example(NamedTuple):
    setting: tuple[str | int, ...]  # a path into the settings: name, then keys
    value: str  # the variable's value
    expected: Any  # the setting's value then


EXAMPLES: dict[str, Example] = {
    "SECRET_KEY": Example(("SECRET_KEY",), "k" * 50, "k" * 50),
    "SECRET_KEY_FILE": Example(("SECRET_KEY_FILE",), "/run/keys/dash", Path("/run/keys/dash")),
    "DEBUG": Example(("DEBUG",), "true", True),
    "ALLOWED_HOSTS": Example(("ALLOWED_HOSTS",), "a.example, b.test", ["a.example", "b.test"]),
    "CSRF_TRUSTED_ORIGINS": Example(
        ("CSRF_TRUSTED_ORIGINS",), "https://a.example", ["https://a.example"]
    ),
    "DATABASE_URL": Example(
        ("DATABASES", "default", "NAME"), "postgres://u:p@db.example:5432/orders", "orders"
    ),
    "TEST_DB_NAME": Example(
        ("DATABASES", "default", "TEST", "NAME"), "/tmp/t.sqlite3", "/tmp/t.sqlite3"
    ),
    "REDIS_URL": Example(("REDIS_URL",), "redis://r:6379/1", "redis://r:6379/1"),
    "STATIC_ROOT": Example(("STATIC_ROOT",), "/srv/static", "/srv/static"),
    "SERVE_STATIC": Example(("SERVE_STATIC",), "0", False),
    "MEDIA_ROOT": Example(("MEDIA_ROOT",), "/srv/media", Path("/srv/media")),
    "RESILIENCE_DEMO": Example(("RESILIENCE_DEMO",), "1", True),
    "WORKFLOW_DEMO_RATE": Example(("WORKFLOW_DEMO_RATE",), "2.5", 2.5),
    "WORKFLOW_SERVICES_FILE": Example(("WORKFLOW_SERVICES_FILE",), "/etc/s.json", "/etc/s.json"),
    "WORKFLOW_CHECKPOINT_INTERVAL": Example(("WORKFLOW_CHECKPOINT_INTERVAL",), "7", 7),
    "DEMO_ADMIN_USER": Example(("DEMO_ADMIN_USER",), "ops", "ops"),
    "DEMO_ADMIN_PASSWORD": Example(("DEMO_ADMIN_PASSWORD",), "pw-from-env", "pw-from-env"),
    "API_RATE_LIMIT": Example(("API_RATE_LIMIT",), "10/1", "10/1"),
    "API_TOKEN_CACHE_TTL": Example(("API_TOKEN_CACHE_TTL",), "30s", 30.0),
    "TRACES_API_READ_RATIO": Example(("TRACES_API_READ_RATIO",), "0.5", 0.5),
    "METRICS_TOKEN": Example(("METRICS_TOKEN",), "scrape-token", "scrape-token"),
    "METRICS_ALLOWED_NETWORKS": Example(
        ("METRICS_ALLOWED_NETWORKS",), "10.0.0.0/8", ["10.0.0.0/8"]
    ),
    "METRICS_REQUIRE_BOTH": Example(("METRICS_REQUIRE_BOTH",), "yes", True),
    "HEALTH_CHANNEL_TIMEOUT": Example(("HEALTH_CHANNEL_TIMEOUT",), "500ms", 0.5),
    "TRACES_ENABLED": Example(("TRACES_ENABLED",), "0", False),
    "TRACES_MAX_AGE": Example(("TRACES_MAX_AGE",), "2h", timedelta(hours=2)),
    "TRACES_MAX_ROWS": Example(("TRACES_MAX_ROWS",), "5000", 5000),
    "OTEL_EXPORTER_OTLP_ENDPOINT": Example(
        ("TRACES_OTLP_ENDPOINT",), "http://collector:4318/", "http://collector:4318/v1/traces"
    ),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": Example(
        ("TRACES_OTLP_ENDPOINT",), "http://collector:4318/custom", "http://collector:4318/custom"
    ),
    "OTEL_SERVICE_NAME": Example(("TRACES_SERVICE_NAME",), "orders", "orders"),
    "OTEL_PYTHON_DJANGO_EXCLUDED_URLS": Example(("TRACES_EXCLUDED_URLS",), "/healthz", "/healthz"),
    "OTEL_PYTHON_EXCLUDED_URLS": Example(("TRACES_EXCLUDED_URLS",), "/ping", "/ping"),
    "ALERTS_ENABLED": Example(("ALERTS_ENABLED",), "off", False),
    "ALERTS_INTERVAL": Example(("ALERTS_INTERVAL",), "30s", 30.0),
    "CHECKPOINT_COMPRESSION": Example(("CHECKPOINT_COMPRESSION",), "gzip", "gzip"),
    "CHECKPOINT_SIGNING_KEY": Example(("CHECKPOINT_SIGNING_KEY",), "s" * 32, "s" * 32),
    "LOG_LEVEL": Example(("LOGGING", "root", "level"), "DEBUG", "DEBUG"),
    "LOGIN_RATE_LIMIT": Example(("LOGIN_RATE_LIMIT",), "5/60", "5/60"),
    "TRUSTED_PROXIES": Example(("TRUSTED_PROXIES",), "10.1.0.0/16", ["10.1.0.0/16"]),
    "API_DOCS_PUBLIC": Example(("API_DOCS_PUBLIC",), "true", True),
    "ALERTS_WEBHOOK_ALLOW_PRIVATE": Example(("ALERTS_WEBHOOK_ALLOW_PRIVATE",), "1", True),
    "LIVE_REAUTH_INTERVAL": Example(("LIVE_REAUTH_INTERVAL",), "2m", 120.0),
    "SECURE_SSL_REDIRECT": Example(("SECURE_SSL_REDIRECT",), "true", True),
    "SESSION_COOKIE_SECURE": Example(("SESSION_COOKIE_SECURE",), "true", True),
    "CSRF_COOKIE_SECURE": Example(("CSRF_COOKIE_SECURE",), "true", True),
    "SECURE_HSTS_SECONDS": Example(("SECURE_HSTS_SECONDS",), "31536000", 31536000),
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": Example(("SECURE_HSTS_INCLUDE_SUBDOMAINS",), "on", True),
    "SECURE_HSTS_PRELOAD": Example(("SECURE_HSTS_PRELOAD",), "yes", True),
    "CHECKPOINT_KEEP_LAST": Example(("CHECKPOINT_KEEP_LAST",), "3", 3),
    "CHECKPOINT_MAX_AGE": Example(("CHECKPOINT_MAX_AGE",), "2d", "2d"),
    "CHECKPOINT_CLEANUP_INTERVAL": Example(("CHECKPOINT_CLEANUP_INTERVAL",), "5m", 300.0),
    "METRICS_APPLICATION": Example(("METRICS_APPLICATION",), "orders", "orders"),
    "OTEL_TRACES_EXPORTER": Example(("TRACES_EXPORTERS",), "console, otlp", ["console", "otlp"]),
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": Example(
        ("TRACES_ZIPKIN_ENDPOINT",),
        "http://zipkin:9411/api/v2/spans",
        "http://zipkin:9411/api/v2/spans",
    ),
    "INGEST_MAX_BODY_BYTES": Example(("INGEST_MAX_BODY_BYTES",), "1048576", 1048576),
    "INGEST_MAX_SPANS": Example(("INGEST_MAX_SPANS",), "500", 500),
    "INGEST_MAX_ATTRIBUTES": Example(("INGEST_MAX_ATTRIBUTES",), "16", 16),
    "INGEST_MAX_EVENTS": Example(("INGEST_MAX_EVENTS",), "8", 8),
    "INGEST_MAX_VALUE_LENGTH": Example(("INGEST_MAX_VALUE_LENGTH",), "256", 256),
    "INGEST_RETRY_AFTER": Example(("INGEST_RETRY_AFTER",), "30", 30),
    "INGEST_MAX_METRIC_SERIES": Example(("INGEST_MAX_METRIC_SERIES",), "500", 500),
    "FLEET_STALE_AFTER": Example(("FLEET_STALE_AFTER",), "2.5", 2.5),
    "FLEET_GONE_AFTER": Example(("FLEET_GONE_AFTER",), "2m", 120.0),
    "FLEET_COMMAND_TTL": Example(("FLEET_COMMAND_TTL",), "10s", 10.0),
    "FLEET_REPORT_INTERVAL": Example(("FLEET_REPORT_INTERVAL",), "500ms", 0.5),
    "SECURE_PROXY_SSL_HEADER": Example(
        ("SECURE_PROXY_SSL_HEADER",),
        "HTTP_X_FORWARDED_PROTO,https",
        ("HTTP_X_FORWARDED_PROTO", "https"),
    ),
}


def readme_variables() -> list[str]:
    """The variables in the first column of the README's settings table, in order."""
    text = README.read_text()
    section = text.split("## Settings (environment variables)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "the README's settings table is missing"
    names: list[str] = []
    for row in rows:
        names += re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])
    return names


def settings_variables() -> set[str]:
    """The variables settings.py reads (it reads them through its env_* parsers only)."""
    source = SETTINGS.read_text()
    assert "os.environ[" not in source
    assert len(re.findall(r"os\.environ\.get\(", source)) == len(
        re.findall(r"^def env_", source, re.MULTILINE)
    ), "settings.py reads the environment outside its env_* parsers"
    return set(re.findall(r"\benv_\w+\(\s*\"([A-Z][A-Z0-9_]*)\"", source))


# Reads a JSON list of {"env": {...}, "paths": [[...], ...]}; for each case, runs the
# settings module afresh with exactly that environment and prints the values' reprs.
_PROBE = r"""
import importlib.util, json, os, sys
cases = json.load(sys.stdin)
base = dict(os.environ)
results = []
for case in cases:
    os.environ.clear()
    os.environ.update(base)
    os.environ.update(case["env"])
    spec = importlib.util.spec_from_file_location("settings_probe", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = []
    for path in case["paths"]:
        value = getattr(module, path[0])
        for key in path[1:]:
            value = value[key]
        values.append(repr(value))
    results.append(values)
print(json.dumps(results))
"""


def _probe(cases: list[dict[str, Any]], tmp_path: Path) -> list[list[str]]:
    documented = set(EXAMPLES) | set(readme_variables()) | settings_variables()
    env = {k: v for k, v in os.environ.items() if k not in documented}
    # Never the developer's key file, and never a write: nothing may appear in tmp_path.
    env.update(SECRET_KEY_FILE=str(tmp_path / "no-key"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(SETTINGS)],
        input=json.dumps(cases),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_every_readme_row_has_an_example() -> None:
    missing = [name for name in readme_variables() if name not in EXAMPLES]
    assert not missing, f"README variables without an entry in EXAMPLES: {missing}"
    assert not set(EXAMPLES) - set(readme_variables()), "EXAMPLES lists unknown variables"


def test_every_variable_settings_reads_is_in_the_readme() -> None:
    undocumented = settings_variables() - set(readme_variables())
    assert not undocumented, f"settings.py reads variables the README omits: {undocumented}"


def test_each_variable_changes_the_setting_it_names(tmp_path: Path) -> None:
    names = list(EXAMPLES)
    cases = [{"env": {}, "paths": [list(EXAMPLES[name].setting) for name in names]}]
    cases += [
        {"env": {name: EXAMPLES[name].value}, "paths": [list(EXAMPLES[name].setting)]}
        for name in names
    ]
    default, *each = _probe(cases, tmp_path)
    wrong = {}
    for name, before, [after] in zip(names, default, each, strict=True):
        expected = repr(EXAMPLES[name].expected)
        if after != expected or after == before:
            wrong[name] = f"default {before}, with {EXAMPLES[name].value!r}: {after}"
    assert not wrong, wrong
    assert list(tmp_path.iterdir()) == []  # importing the settings wrote nothing


def test_without_a_key_importing_settings_writes_nothing_and_the_key_is_empty(
    tmp_path: Path,
) -> None:
    [[key, path]] = _probe([{"env": {}, "paths": [["SECRET_KEY"], ["SECRET_KEY_FILE"]]}], tmp_path)
    assert key == "''" and path == repr(tmp_path / "no-key")
    assert not (tmp_path / "no-key").exists()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean"),
        ("TRACES_MAX_ROWS", "0", "TRACES_MAX_ROWS must be an integer >= 1"),
        ("ALERTS_INTERVAL", "soon", "ALERTS_INTERVAL: 'soon' is not a duration"),
        ("HEALTH_CHANNEL_TIMEOUT", "0s", "HEALTH_CHANNEL_TIMEOUT must be a positive duration"),
        ("WORKFLOW_DEMO_RATE", "fast", "WORKFLOW_DEMO_RATE must be a number"),
    ],
)
def test_a_malformed_value_stops_the_import_naming_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        _probe([{"env": {name: value}, "paths": []}], tmp_path)
