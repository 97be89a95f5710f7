"""Settings for the resilience dashboard.

Everything comes from environment variables with safe embedded defaults, so
`make run` works on a fresh machine and a deployment only sets variables. This is
the only module that reads the environment (one parser per type below); apps read
Django settings. Every variable read here is a row of the README's settings table,
and tests/dashboard/test_settings_env.py proves each one changes its setting.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
import django_stubs_ext

from dashboard.durations import parse_timedelta

# Generic admin/queryset classes (`admin.ModelAdmin[Model]`) work at run time too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def env_duration(name: str, default: str) -> timedelta:
    """``"90"`` (seconds), ``"250ms"``, ``"15m"``, ``"2h"``, ``"7d"``: a positive duration."""
    value = os.environ.get(name, "").strip() or default
    try:
        duration = parse_timedelta(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    if duration <= timedelta(0):
        raise ValueError(f"{name} must be a positive duration, got {value!r}")
    return duration


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key(path: Path) -> str:
    if key := env_str("SECRET_KEY", ""):
        return key
    # `make run` generates it once (`manage.py ensure_secret_key`) into an untracked file,
    # so sessions survive restarts; importing settings never writes it. Without a key
    # Django refuses to sign anything ("The SECRET_KEY setting must not be empty").
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


SECRET_KEY_FILE = Path(env_str("SECRET_KEY_FILE", str(BASE_DIR / ".secret_key")))
SECRET_KEY = _secret_key(SECRET_KEY_FILE)
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
    "dashboard.ingest",
    "dashboard.api",
    "dashboard.checkpoints",
    "dashboard.workflows",
    "dashboard.live",
    "dashboard.alerts",
    "dashboard.fleet",
    "dashboard.servicemap",
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
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
    )
}
# Django's engines with idle connections pooled across the per-request threads of ASGI
# (dashboard/db: an open costs more than an API read's queries).
_POOLED_ENGINES = {
    "django.db.backends.sqlite3": "dashboard.db.sqlite3",
    "django.db.backends.postgresql": "dashboard.db.postgresql",
}
_ENGINE = DATABASES["default"]["ENGINE"]
DATABASES["default"]["ENGINE"] = _POOLED_ENGINES.get(_ENGINE, _ENGINE)
if _ENGINE == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A named file (not in-memory) so a live server in a forked child can share it;
    # one per test process, so parallel runs never share a database.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("TEST_DB_NAME", "")
        or str(Path(tempfile.gettempdir()) / f"resilience-test-{os.getpid()}.sqlite3")
    }

REDIS_URL = env_str("REDIS_URL", "")
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
# Set for `collectstatic` deployments (whitenoise then serves hashed files; see below).
STATIC_ROOT = env_str("STATIC_ROOT", "") or None
SERVE_STATIC = env_bool("SERVE_STATIC", True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# REST API: per user/token budget "requests/seconds" ("" turns it off).
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "120/60")
# Seconds an authenticated API token (and its user, permissions) stays cached in the
# process ("0" turns it off): how long a revocation made elsewhere may take to apply.
API_TOKEN_CACHE_TTL = (
    0.0
    if env_str("API_TOKEN_CACHE_TTL", "5s").strip() in ("", "0", "0s", "0ms")
    else env_duration("API_TOKEN_CACHE_TTL", "5s").total_seconds()
)
# Prometheus scrape endpoint /metrics: allowed client networks and/or a bearer token.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
METRICS_REQUIRE_BOTH = env_bool("METRICS_REQUIRE_BOTH", False)
HEALTH_CHANNEL_TIMEOUT = env_duration("HEALTH_CHANNEL_TIMEOUT", "2s").total_seconds()

# Traces: spans stored as SpanRecord rows (and sent over OTLP when the standard
# OTEL_EXPORTER_OTLP_ENDPOINT is set); kept for TRACES_MAX_AGE, at most TRACES_MAX_ROWS rows.
TRACES_ENABLED = env_bool("TRACES_ENABLED", True)
TRACES_MAX_AGE = env_duration("TRACES_MAX_AGE", "1h")
TRACES_MAX_ROWS = env_int("TRACES_MAX_ROWS", 1_000_000)
# The standard OpenTelemetry variables (the OTLP exporter reads its own headers, timeout
# and compression): the endpoint spans are exported to, this service's name, and the
# URL patterns not traced.
TRACES_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or (
    f"{base.rstrip('/')}/v1/traces"
    if (base := env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
    else ""
)
TRACES_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "")
# Share of API reads (GET/HEAD under /api/ starting a trace) whose request span is kept.
TRACES_API_READ_RATIO = env_float("TRACES_API_READ_RATIO", 0.01)
TRACES_EXCLUDED_URLS = (
    env_str("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "")
    or env_str("OTEL_PYTHON_EXCLUDED_URLS", "")
    or "/static/,/ws/,/favicon.ico"
)

# OTLP ingest (POST /v1/traces): limits per request and the back-off told to senders.
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 8 * 1024 * 1024)
INGEST_MAX_SPANS = env_int("INGEST_MAX_SPANS", 10000)
INGEST_MAX_ATTRIBUTES = env_int("INGEST_MAX_ATTRIBUTES", 128)
INGEST_MAX_EVENTS = env_int("INGEST_MAX_EVENTS", 128)
INGEST_MAX_VALUE_LENGTH = env_int("INGEST_MAX_VALUE_LENGTH", 4096)
INGEST_MAX_METRIC_SERIES = env_int("INGEST_MAX_METRIC_SERIES", 10000)
INGEST_RETRY_AFTER = env_int("INGEST_RETRY_AFTER", 5)

# Alert evaluation in the serving process (every ALERTS_INTERVAL seconds).
ALERTS_ENABLED = env_bool("ALERTS_ENABLED", True)
ALERTS_INTERVAL = env_duration("ALERTS_INTERVAL", "5s").total_seconds()

# The fleet (worker processes reporting with resilience.fleet.connect()): an instance
# silent for FLEET_STALE_AFTER seconds is stale, for FLEET_GONE_AFTER gone; a command
# not acknowledged within FLEET_COMMAND_TTL seconds is unreachable.
FLEET_STALE_AFTER = env_duration("FLEET_STALE_AFTER", "5s").total_seconds()
FLEET_GONE_AFTER = env_duration("FLEET_GONE_AFTER", "60s").total_seconds()
FLEET_COMMAND_TTL = env_duration("FLEET_COMMAND_TTL", "30s").total_seconds()
# Seconds between a worker's reports, told to workers in every answer: a command waits
# for the next report, so this bounds the time from a click to the worker applying it.
FLEET_REPORT_INTERVAL = env_duration("FLEET_REPORT_INTERVAL", "1s").total_seconds()

# Live demo workload (fake services driven through breakers and limiters).
RESILIENCE_DEMO = env_bool("RESILIENCE_DEMO", False)
WORKFLOW_DEMO_RATE = env_float("WORKFLOW_DEMO_RATE", None)  # workflows/s (None: 0.8)
WORKFLOW_SERVICES_FILE = env_str("WORKFLOW_SERVICES_FILE", "")  # JSON: service -> pattern
WORKFLOW_CHECKPOINT_INTERVAL = env_int("WORKFLOW_CHECKPOINT_INTERVAL", 3)  # steps
# `manage.py ensure_demo_admin` (run by `make run`) creates this superuser if none exists.
DEMO_ADMIN_USER = env_str("DEMO_ADMIN_USER", "admin")
DEMO_ADMIN_PASSWORD = env_str("DEMO_ADMIN_PASSWORD", "")

# Checkpoint blobs: compression of new blobs, and the HMAC key (derived from SECRET_KEY
# when empty; set it before rotating SECRET_KEY, or existing checkpoints fail to verify).
CHECKPOINT_COMPRESSION = env_str("CHECKPOINT_COMPRESSION", "zstd")
CHECKPOINT_SIGNING_KEY = env_str("CHECKPOINT_SIGNING_KEY", "")

# --- Security (issue 14) -------------------------------------------------------------
# Every setting below is described in the README's "Security" section.
# Alert webhooks may reach loopback and private addresses only when this is set
# (on-premises receivers); cloud metadata, link-local and multicast stay refused.
ALERTS_WEBHOOK_ALLOW_PRIVATE = env_bool("ALERTS_WEBHOOK_ALLOW_PRIVATE", False)
# Reverse proxies (CIDRs) whose X-Forwarded-For is believed (right-most untrusted hop).
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")
# OpenAPI schema and Swagger UI without a login (they need one by default).
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", False)
# Failed logins (password form, admin, API tokens) per username and per client address:
# "<failures>/<seconds>" ("" turns it off); 429 + Retry-After once spent.
LOGIN_RATE_LIMIT = env_str("LOGIN_RATE_LIMIT", "10/300")
MIDDLEWARE = [*MIDDLEWARE, "dashboard.login_throttle.LoginThrottleMiddleware"]
# Open websockets are authorised again this often (seconds); logout closes them at once.
LIVE_REAUTH_INTERVAL = env_duration("LIVE_REAUTH_INTERVAL", "30s").total_seconds()
# Production (README "Production"): Django's own names, off by default so `make run`
# works over plain http on loopback.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# "HTTP_X_FORWARDED_PROTO,https": the header a TLS-terminating proxy sets (and strips
# from clients); only behind such a proxy.
_proxy_ssl = env_list("SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl and len(_proxy_ssl) != 2:
    raise ValueError(f"SECURE_PROXY_SSL_HEADER must be 'HEADER,value', got {_proxy_ssl!r}")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl[0], _proxy_ssl[1]) if _proxy_ssl else None
# Content-Security-Policy (django-csp 4): scripts only from our own static files (no
# inline scripts, no eval); inline styles stay allowed (htmx fragments, the admin).
INSTALLED_APPS = [*INSTALLED_APPS, "csp"]
MIDDLEWARE = [*MIDDLEWARE, "dashboard.middleware.CSPMiddleware"]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
# --- end of the security block ---------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
}

# --- Operations (issue 18): static files, /metrics labels, checkpoint retention -------------
# Static files: whitenoise (async-capable subclass) unless SERVE_STATIC=0 (a front proxy
# serves STATIC_ROOT). With STATIC_ROOT set (production: `manage.py collectstatic`) the
# files are compressed and content-hashed, cached for a year; without it (dev, tests) they
# are served from the app/STATICFILES_DIRS finders, no collectstatic needed.
if SERVE_STATIC:
    MIDDLEWARE.insert(1, "dashboard.staticfiles.StaticFilesMiddleware")
WHITENOISE_USE_FINDERS = STATIC_ROOT is None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_ROOT
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# HTTP server metrics by route (http_server_requests_total, ..._duration_seconds).
MIDDLEWARE.insert(2 if SERVE_STATIC else 1, "dashboard.api.http_metrics.HttpMetricsMiddleware")
# The `application` label of the resilience4j series (Micrometer's common tag).
METRICS_APPLICATION = (
    env_str("METRICS_APPLICATION", "") or TRACES_SERVICE_NAME or "resilience-dashboard"
)
# Where spans go besides the database (traces/exporters.py): otlp, console, zipkin, none.
TRACES_EXPORTERS = env_list("OTEL_TRACES_EXPORTER", "")
# OTEL_TRACES_EXPORTER=zipkin: where to (unset: the Zipkin exporter's own default).
TRACES_ZIPKIN_ENDPOINT = env_str("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "")
# Checkpoint retention, enforced every CHECKPOINT_CLEANUP_INTERVAL seconds in the server
# and by `manage.py checkpoints cleanup --policy`: keep the newest CHECKPOINT_KEEP_LAST per
# agent and workflow, none older than CHECKPOINT_MAX_AGE ("" or 0 turns a rule off). The
# newest checkpoint of a workflow still running is never deleted.
# Defaults bound the demo (RESILIENCE_DEMO: ~200 checkpoints a minute) to about an hour.
CHECKPOINT_KEEP_LAST = env_int("CHECKPOINT_KEEP_LAST", 10, minimum=0)
CHECKPOINT_MAX_AGE = env_str("CHECKPOINT_MAX_AGE", "1h" if RESILIENCE_DEMO else "7d")
CHECKPOINT_CLEANUP_INTERVAL = env_duration("CHECKPOINT_CLEANUP_INTERVAL", "60s").total_seconds()
