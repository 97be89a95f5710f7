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

# Live demo workload (fake services driven through breakers and limiters).
RESILIENCE_DEMO = env_bool("RESILIENCE_DEMO", False)

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
LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10/300")
MIDDLEWARE = [*MIDDLEWARE, "dashboard.login_throttle.LoginThrottleMiddleware"]
# Open websockets are authorised again this often (seconds); logout closes them at once.
LIVE_REAUTH_INTERVAL = float(os.environ.get("LIVE_REAUTH_INTERVAL", "30"))
# Production (README "Production"): Django's own names, off by default so `make run`
# works over plain http on loopback.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS") or "0")
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
MIDDLEWARE = [*MIDDLEWARE, "csp.middleware.CSPMiddleware"]
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
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
