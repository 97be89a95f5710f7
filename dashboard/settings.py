"""Settings for the resilience dashboard.

Everything comes from environment variables with safe embedded defaults, so
`make run` works on a fresh machine and a deployment only sets variables.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
import django_stubs_ext

# Generic admin/queryset classes (`admin.ModelAdmin[Model]`) work at run time too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    # Generated once and kept in an untracked file, so sessions survive restarts.
    path = Path(os.environ.get("SECRET_KEY_FILE", BASE_DIR / ".secret_key"))
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ninja",  # serves Swagger UI's files locally (no CDN here)
    "dashboard.cluster",  # REDIS_URL: shared breakers and limiters (before the others)
    "dashboard",
    "dashboard.breakers",
    "dashboard.traces",
    "dashboard.api",
    "dashboard.checkpoints",
    "dashboard.workflows",
    "dashboard.live",
    "dashboard.alerts",
    "dashboard.fleet",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite in WAL mode is the embedded default; DATABASE_URL selects PostgreSQL.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A named file (not in-memory) so a live server in a forked child can share it;
    # one per test process, so parallel runs never share a database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("TEST_DB_NAME")
        or str(Path(tempfile.gettempdir()) / f"resilience-test-{os.getpid()}.sqlite3")
    }

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Only for `collectstatic` deployments; the ASGI app serves from the finders.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
SERVE_STATIC = env_bool("SERVE_STATIC", True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# REST API: per user/token budget "requests/seconds" ("" turns it off).
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "120/60")
# Prometheus scrape endpoint /metrics: allowed client networks and/or a bearer token.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
METRICS_REQUIRE_BOTH = env_bool("METRICS_REQUIRE_BOTH", False)
HEALTH_CHANNEL_TIMEOUT = float(os.environ.get("HEALTH_CHANNEL_TIMEOUT", "2.0"))

# Traces: spans stored as SpanRecord rows (and sent over OTLP when the standard
# OTEL_EXPORTER_OTLP_ENDPOINT is set); kept for TRACES_MAX_AGE, at most TRACES_MAX_ROWS rows.
TRACES_ENABLED = env_bool("TRACES_ENABLED", True)
TRACES_MAX_AGE = os.environ.get("TRACES_MAX_AGE", "1h")  # "90m", "2h", "1d" or seconds
TRACES_MAX_ROWS = int(os.environ.get("TRACES_MAX_ROWS", "1000000"))

# Alert evaluation in the serving process (every ALERTS_INTERVAL seconds).
ALERTS_ENABLED = env_bool("ALERTS_ENABLED", True)
ALERTS_INTERVAL = float(os.environ.get("ALERTS_INTERVAL", "5"))

# The fleet (worker processes reporting with resilience.fleet.connect()): an instance
# silent for FLEET_STALE_AFTER seconds is stale, for FLEET_GONE_AFTER gone; a command
# not acknowledged within FLEET_COMMAND_TTL seconds is unreachable.
FLEET_STALE_AFTER = float(os.environ.get("FLEET_STALE_AFTER", "5"))
FLEET_GONE_AFTER = float(os.environ.get("FLEET_GONE_AFTER", "60"))
FLEET_COMMAND_TTL = float(os.environ.get("FLEET_COMMAND_TTL", "30"))
# Seconds between a worker's reports, told to workers in every answer: a command waits
# for the next report, so this bounds the time from a click to the worker applying it.
FLEET_REPORT_INTERVAL = float(os.environ.get("FLEET_REPORT_INTERVAL", "1"))

# Live demo workload (fake services driven through breakers and limiters).
RESILIENCE_DEMO = env_bool("RESILIENCE_DEMO", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
