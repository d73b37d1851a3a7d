"""Settings shared by every environment. Values come from the environment (SPEC §11)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def _origins(url: str) -> list[str]:
    parts = urlsplit(url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []


# Runtime state of the embedded setup (SQLite file, broker folders, media) lives here.
VAR_DIR = Path(env_str("MJGATE_VAR_DIR") or BASE_DIR / "var")

SECRET_KEY = env_str("SECRET_KEY") or "django-insecure-local-development-key-change-me"
# Previous SECRET_KEYs during a rotation: sessions, password reset links and credentials
# encrypted with a key derived from them stay valid (run `manage.py reencrypt`, then drop them).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
PUBLIC_BASE_URL = (env_str("PUBLIC_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
# Forms posted from the public address are always trusted, even when the proxy in front does
# not pass the original Host on (Django would otherwise compare the Origin with the inner host).
CSRF_TRUSTED_ORIGINS = list(
    dict.fromkeys([*env_list("CSRF_TRUSTED_ORIGINS", []), *_origins(PUBLIC_BASE_URL)])
)

INSTALLED_APPS = [
    # django.contrib.admin, with the operator site (allauth login, MFA for staff) as default.
    "apps.operator.apps.OperatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "apps.core",
    "apps.accounts",
    "apps.api_keys",
    "apps.billing",
    "apps.tasks",
    "apps.engines",
    "apps.engines.discord.apps.DiscordEngineConfig",
    "apps.protocols",
    "apps.webhooks",
    "apps.monitoring",
    "apps.translation",
    "apps.dashboard",
    # Last: its admin module extends the admins the apps above registered.
    "apps.operator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outermost but one: every HTML answer gets the policy, a middleware's own too.
    "apps.core.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.CompatCorsMiddleware",
    "apps.core.middleware.UrlTextGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database ---------------------------------------------------------------------------------
# DATABASE_URL selects PostgreSQL in production; without it the embedded setup uses SQLite in
# WAL mode with IMMEDIATE transactions so the web, worker and beat processes can share it.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # libpq waits for the kernel (minutes) on a database host that drops packets; a web
        # worker and /readyz should give up sooner. A connect_timeout in the URL wins.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
# The submit's, fetch's and list's hand-written statements are prepared on each connection
# (apps/core/db.py). Turn off behind a pooler in transaction mode (PgBouncer before 1.21, or
# without max_prepared_statements), where prepared statements do not follow the session.
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Users and sign-up (django-allauth) -------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_ADAPTER = "apps.accounts.adapters.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
# Sign-up and password reset answer alike whether or not an address has an account (allauth's
# default, stated because it matters); allauth's default rate limits stay on.
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[mjgate] "
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
# TOTP secrets and recovery-code seeds are stored encrypted (FIELD_ENCRYPTION_KEYS).
MFA_ADAPTER = "apps.accounts.adapters.MFAAdapter"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"

# --- E-mail -----------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "mjgate <noreply@localhost>"
SERVER_EMAIL = DEFAULT_FROM_EMAIL
#: The product's name in mails ("Hello from mjgate!"), instead of the host they were sent from.
SITE_NAME = env_str("SITE_NAME") or "mjgate"
#: Development only: keep a copy of every mail here and list them at /dev/mailbox/.
MAILBOX_DIR: str | None = None
# Limits on invitation e-mails (apps.accounts.services.invitation_create): per organization
# and per inviter an hour, per invited address (across all organizations) a day; 0 turns one
# off. Counted in PostgreSQL from the invitations, so they hold while Redis is down.
INVITATION_RATE_PER_ORG_HOUR = env_int("INVITATION_RATE_PER_ORG_HOUR", 20)
INVITATION_RATE_PER_USER_HOUR = env_int("INVITATION_RATE_PER_USER_HOUR", 50)
INVITATION_RATE_PER_ADDRESS_DAY = env_int("INVITATION_RATE_PER_ADDRESS_DAY", 3)

# --- Internationalisation ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files and media (results are served from our own storage, SPEC §4.4) --------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
# S3-compatible storage: set STORAGE_BACKEND=storages.backends.s3.S3Storage and the AWS_* variables
# (django-storages must be installed); the default keeps results on local disk.
STORAGES = {
    "default": {
        "BACKEND": env_str("STORAGE_BACKEND") or "django.core.files.storage.FileSystemStorage",
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL")
AWS_S3_CUSTOM_DOMAIN = env_str("AWS_S3_CUSTOM_DOMAIN")
AWS_QUERYSTRING_AUTH = False

# --- Cache (rate limits, idempotency locks) ---------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# Seconds to connect to Redis and to wait for one answer. kombu's Redis transport waits forever
# unless told, so a Redis host that drops packets would hang every task publish (and /readyz)
# until the kernel gives up, about two minutes later; API requests wait on the cache likewise.
REDIS_SOCKET_TIMEOUT = 2.0
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache with one client (one connection pool) per process.
            "BACKEND": "apps.core.cache.ProcessRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "mjgate",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -----------------------------------------------------------------------------------
# Without REDIS_URL the embedded setup keeps its broker in a SQLite file (kombu's SQLAlchemy
# transport): no server needed, and safe with several processes, which kombu's filesystem
# transport is not (a worker reading a message file still being written died with
# "Unrecoverable error: JSONDecodeError", celery/kombu#1551). kombu takes each message under
# SQLite's BEGIN IMMEDIATE lock; "database is locked" is a connection error Celery retries.
EMBEDDED_BROKER_FILE = VAR_DIR / "broker.sqlite3"
CELERY_BROKER_URL = (
    env_str("CELERY_BROKER_URL") or REDIS_URL or f"sqla+sqlite:///{EMBEDDED_BROKER_FILE}"
)
if CELERY_BROKER_URL.startswith("sqla+sqlite:"):
    # Passed to SQLAlchemy's create_engine: wait for the write lock instead of failing.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"connect_args": {"timeout": 30}}
    # Imported here only: SQLite's library is about 1 MiB of a process that loads it, and a
    # process on PostgreSQL and Redis never needs it (issue 15, P6).
    import sqlite3

    # Write-ahead logging lets readers poll while a process writes (persistent in the file).
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(EMBEDDED_BROKER_FILE, timeout=30)) as _broker_db,
    ):
        _broker_db.execute("PRAGMA journal_mode=WAL")
elif CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    # kombu's filesystem transport does not create its folders; a worker dies without them.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange bindings; kombu's default is a "control" folder in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Only the connect timeout: the worker's blocking reads (BRPOP) outlast any short socket
    # timeout by design.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 3600,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps reconnecting for as long as the broker is away (a Redis restart must never
# end it; see config/celery.py), and a web request that publishes gives up quickly: the rows
# in PostgreSQL re-drive whatever a lost message would have started.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
# Messages to a Redis broker go out through the lean send (apps/core/messaging.py): Celery's
# own message, without the 0.5 ms of CPU its publish machinery costs a message. Off: Celery's send.
LEAN_PUBLISH = env_bool("LEAN_PUBLISH", True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE") or "mjgate"
# Webhook deliveries have their own queue and worker (scripts/devrun.py, docker/compose.yml):
# behind long engine jobs a first attempt waited 11 s; on its own queue it leaves at once.
CELERY_WEBHOOKS_QUEUE = env_str("CELERY_WEBHOOKS_QUEUE") or "webhooks"
# Making and storing results (the sandbox's render, splits, thumbnails) runs after the job's
# account slot is freed, on a queue of its own served by a low-priority worker
# (``CELERY_WORKER_NICE``), so it never holds a slot or delays a start or a poll. A result's
# thumbnails and splits are made there too, after its SUCCESS, at the lowest priority
# (``lifecycle.DERIVE_PRIORITY``: Redis serves every waiting finishing step first).
CELERY_RESULTS_QUEUE = env_str("CELERY_RESULTS_QUEUE") or f"{CELERY_TASK_DEFAULT_QUEUE}-results"
CELERY_TASK_ROUTES = {
    "webhooks.*": {"queue": CELERY_WEBHOOKS_QUEUE},
    "tasks.finish_job": {"queue": CELERY_RESULTS_QUEUE},
    "tasks.derive_files": {"queue": CELERY_RESULTS_QUEUE},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # The safety nets: queued work is in PostgreSQL, so these recover anything a lost message
    # or a dead worker left behind.
    "tasks-sweep": {
        "task": "tasks.sweep",
        "schedule": float(env_int("TASK_SWEEP_INTERVAL", 30)),
    },
    "tasks-dispatch": {
        "task": "tasks.dispatch",
        "schedule": float(env_int("TASK_DISPATCH_INTERVAL", 5)),
    },
}
# Webhook attempts whose Celery message was lost, and every retry longer than a minute, are
# found in the database by this task (SPEC §7).
CELERY_BEAT_SCHEDULE["webhooks-deliver-due"] = {
    "task": "webhooks.deliver_due",
    "schedule": float(env_int("WEBHOOK_DELIVER_DUE_INTERVAL", 5)),
}
# Retention: finished webhook messages older than WEBHOOK_RETENTION_DAYS, and expired
# Idempotency-Key records (24 h), are deleted hourly.
CELERY_BEAT_SCHEDULE["webhooks-purge"] = {"task": "webhooks.purge", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["core-purge-idempotency-records"] = {
    "task": "core.purge_idempotency_records",
    "schedule": 3600.0,
}
# Operator alerts (apps/monitoring): conditions checked every minute, told once, resolved once.
CELERY_BEAT_SCHEDULE["monitoring-evaluate-alerts"] = {
    "task": "monitoring.evaluate_alerts",
    "schedule": float(env_int("ALERT_EVALUATE_INTERVAL", 60)),
}
# Flap damping: an alert opens once its condition held this many evaluations in a row and at
# least this many seconds, and resolves once it was clear as many evaluations and seconds; a
# condition that comes and goes with every evaluation is not told each time. 1 and 0: at once.
ALERT_OPEN_AFTER_CHECKS = env_int("ALERT_OPEN_AFTER_CHECKS", 2)
ALERT_OPEN_AFTER_SECONDS = env_int("ALERT_OPEN_AFTER_SECONDS", 0)
ALERT_RESOLVE_AFTER_CHECKS = env_int("ALERT_RESOLVE_AFTER_CHECKS", 3)
ALERT_RESOLVE_AFTER_SECONDS = env_int("ALERT_RESOLVE_AFTER_SECONDS", 0)
if CELERY_BROKER_URL.startswith("sqla+sqlite:"):
    # The embedded broker keeps every delivered message; beat removes them (apps/core/embedded_broker.py).
    CELERY_BEAT_SCHEDULE["core-compact-embedded-broker"] = {
        "task": "core.compact_embedded_broker",
        "schedule": 300.0,
    }
# The discord engine's job records untouched for DISCORD_JOB_RETENTION_DAYS, hourly.
CELERY_BEAT_SCHEDULE["discord-purge-jobs"] = {"task": "discord.purge_jobs", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Django REST framework and the OpenAPI schema ---------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.core.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.HasApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bounded JSON (apps.core.jsonbody): size, value count, depth and storable text.
    "DEFAULT_PARSER_CLASSES": ["apps.core.jsonbody.JSONBodyParser"],
    "EXCEPTION_HANDLER": "apps.core.api.native_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Per-key request rate limit on every API dialect (apps.core.ratelimit).
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.ratelimit.ApiKeyRateThrottle"],
}
# Requests per minute per API key, sliding window; 0 disables the limit.
API_RATE_LIMIT = env_int("API_RATE_LIMIT", 600)
SPECTACULAR_SETTINGS = {
    "TITLE": "mjgate API",
    "DESCRIPTION": "Midjourney-style image generation: the native v1 API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    # GET /api/v1/status's states, named apart from a task's status.
    "ENUM_NAME_OVERRIDES": {"ServiceStateEnum": ["operational", "degraded", "down"]},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Logging: one JSON object per line --------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL") or "INFO"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "apps.core.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Operator admin ---------------------------------------------------------------------------
ADMIN_URL = (env_str("ADMIN_URL") or "admin/").strip("/") + "/"
# Staff without an activated second factor (TOTP or a security key) are sent to set one up
# before any admin page. Local and test settings turn it off so the demo operator works.
ADMIN_REQUIRE_MFA = env_bool("ADMIN_REQUIRE_MFA", True)

# --- Content-Security-Policy of the HTML pages (apps/core/csp.py) -----------------------------
# Script and style from our own static files only (no inline script, event handlers or style
# attributes; htmx without eval), never framed. Forms post here; Stripe's Checkout and
# customer portal are listed because browsers check the redirect that answers a form's POST
# (buy, upgrade, manage the plan) against form-action too. img-src and media-src also get,
# page by page, the origins result files are served from: PUBLIC_BASE_URL's and the storage's.
CONTENT_SECURITY_POLICY: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "media-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"],
    "frame-ancestors": ["'none'"],
}
# The admin (staff only): Django's change list writes a <style> block and the operator pages
# draw meters with a style attribute, so style may be inline there. Script may not.
CONTENT_SECURITY_POLICY_ADMIN = {
    **CONTENT_SECURITY_POLICY,
    "style-src": ["'self'", "'unsafe-inline'"],
}
# Views whose pages carry no policy: the API docs (drf-spectacular's Swagger UI page starts
# itself with an inline script).
CONTENT_SECURITY_POLICY_EXEMPT_VIEWS = ["api-docs"]

# --- API keys ---------------------------------------------------------------------------------
# Only record last_used_at when the stored value is older than this, to avoid a write per call.
API_KEY_LAST_USED_RESOLUTION = timedelta(seconds=env_int("API_KEY_LAST_USED_RESOLUTION", 60))
# Number of reverse proxies in front of the web process whose X-Forwarded-For entries we trust.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# allauth's rate limits (login failures, sign-ups, password resets) count per client address:
# behind a proxy, without this every visitor would share the proxy's address and one bucket.
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT

# --- Billing ----------------------------------------------------------------------------------
SIGNUP_GRANT_TOKENS = env_int("SIGNUP_GRANT_TOKENS", 70_000)
# A movement that takes the available balance from at or above this to below it publishes a
# balance.low webhook event (35,000 tokens = 1 CNY); 0 turns the event off.
BALANCE_LOW_THRESHOLD = env_int("BALANCE_LOW_THRESHOLD", 35_000)
TOKENS_PER_CNY = 35_000
# Bring-your-own upstream accounts: a task the organization's own account runs costs the
# platform fee of its price row (Price.own_account_tokens, operator-editable); a row without
# one charges this percentage of the price (the seeded fees are 20%).
OWN_ACCOUNT_FEE_PERCENT = env_int("OWN_ACCOUNT_FEE_PERCENT", 20)

# --- Task engine ------------------------------------------------------------------------------
TASK_START_DEADLINE = timedelta(seconds=env_int("TASK_START_DEADLINE", 600))
TASK_DEFAULT_RUN_TIMEOUT = timedelta(seconds=env_int("TASK_DEFAULT_RUN_TIMEOUT", 600))
TASK_POLL_INTERVAL = env_float("TASK_POLL_INTERVAL", 2.0)
# Pixels a result image may have: a larger one fails its task (a decompression bomb, or an
# upstream gone wrong; Midjourney's largest results are about 17 million pixels).
RESULT_MAX_PIXELS = env_int("RESULT_MAX_PIXELS", 40_000_000)
TASK_SWEEP_INTERVAL = env_int("TASK_SWEEP_INTERVAL", 30)
TASK_DISPATCH_INTERVAL = env_int("TASK_DISPATCH_INTERVAL", 5)
# Seconds a job the upstream finished may wait on the results queue before the sweeper sends
# its finishing message again.
TASK_FINISH_LEASE = env_float("TASK_FINISH_LEASE", 300.0)
# Seconds one poll or finishing step of a job may take: below the soft time limit, so a job
# slow to process fails on its own (retried, then failed) and never cools its account down.
TASK_JOB_TIME_BUDGET = env_float(
    "TASK_JOB_TIME_BUDGET", max(1.0, float(CELERY_TASK_SOFT_TIME_LIMIT) - 10.0)
)
# Coalesce dispatch passes with flags in Redis (at most one pass running and one message
# waiting, however many tasks are accepted or finish at once). Without Redis, one pass a kick.
TASK_DISPATCH_COALESCE = env_bool("TASK_DISPATCH_COALESCE", True)
# Seconds added to every worker lease before the sweeper presumes the worker dead.
TASK_LEASE_GRACE = env_float("TASK_LEASE_GRACE", 30.0)

# --- mjproxy engine (apps/engines/mjproxy) ----------------------------------------------------
# Every call to a midjourney-proxy upstream has explicit limits: seconds to connect, and to
# wait for an answer (submits upload up to five images, so the answer may take a while).
MJPROXY_CONNECT_TIMEOUT = env_float("MJPROXY_CONNECT_TIMEOUT", 5.0)
MJPROXY_HTTP_TIMEOUT = env_float("MJPROXY_HTTP_TIMEOUT", 30.0)
# Upstream task ids per POST /mj/task/list-by-condition; one polling round of an account asks
# for all its in-flight jobs in batches of this size.
MJPROXY_POLL_BATCH_SIZE = env_int("MJPROXY_POLL_BATCH_SIZE", 50)
# Seconds one batch answer is reused by the per-task poll steps of the same round (shared
# through the cache); at most this stale. 0 asks the upstream on every poll step.
MJPROXY_POLL_CACHE_SECONDS = env_float("MJPROXY_POLL_CACHE_SECONDS", TASK_POLL_INTERVAL)
# Largest result image downloaded from an upstream, in bytes.
MJPROXY_MAX_IMAGE_BYTES = env_int("MJPROXY_MAX_IMAGE_BYTES", 50 * 1024 * 1024)

# --- Webhooks and outbound HTTP ---------------------------------------------------------------
# Lets customer URLs reach loopback and private networks. For development and tests only.
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", False)
# Image URLs in prompts (image prompts, --sref, --cref, --oref) are fetched through the SSRF
# guard at submit and re-hosted in our storage, so the upstream sees a stable URL.
REHOST_PROMPT_URLS = env_bool("REHOST_PROMPT_URLS", True)
# An endpoint whose every delivery fails for this many days is disabled and its owners e-mailed.
WEBHOOK_DISABLE_AFTER_DAYS = env_float("WEBHOOK_DISABLE_AFTER_DAYS", 5.0)
# After a secret rotation the previous secret keeps signing (both signatures sent) this long.
WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS = env_float("WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS", 24.0)
# Finished webhook messages and their attempt log are deleted this many days after they
# finished (pending ones never are); 0 keeps them forever.
WEBHOOK_RETENTION_DAYS = env_float("WEBHOOK_RETENTION_DAYS", 30.0)
# Days the discord engine keeps a job record nobody touched (at least 2; 0 keeps them forever).
DISCORD_JOB_RETENTION_DAYS = env_float("DISCORD_JOB_RETENTION_DAYS", 30.0)
# Requests one delivery worker process sends at once (a batch of due attempts goes out in
# parallel over kept-alive connections, apps/webhooks/delivery.py).
WEBHOOK_SEND_CONCURRENCY = env_int("WEBHOOK_SEND_CONCURRENCY", 16)

# --- Stripe -----------------------------------------------------------------------------------
# Without STRIPE_SECRET_KEY the product runs and buying answers that payments are unavailable.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY") or ""
STRIPE_PUBLISHABLE_KEY = env_str("STRIPE_PUBLISHABLE_KEY") or ""
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET") or ""
STRIPE_API_BASE = env_str("STRIPE_API_BASE") or ""
# Where Checkout sends the customer back; Stripe fills in {CHECKOUT_SESSION_ID}. Unset: the
# billing page on PUBLIC_BASE_URL as it is when the Checkout starts (never the request's Host;
# apps/dashboard/views/billing.py).
STRIPE_SUCCESS_URL = env_str("STRIPE_SUCCESS_URL") or ""
STRIPE_CANCEL_URL = env_str("STRIPE_CANCEL_URL") or ""
# A customer waits on Checkout creation inside a web request: fail fast instead of Stripe's 80 s.
STRIPE_TIMEOUT = env_float("STRIPE_TIMEOUT", 20.0)
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2)
# Seconds a webhook signature's timestamp may be off (replay protection; Stripe's default).
STRIPE_WEBHOOK_TOLERANCE = env_int("STRIPE_WEBHOOK_TOLERANCE", 300)

# --- Secrets at rest --------------------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation). Derived from
# SECRET_KEY when unset: fine locally, and production settings warn about it at start. Keys
# derived from SECRET_KEY and SECRET_KEY_FALLBACKS always decrypt too (apps/core/crypto.py).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS", [])
