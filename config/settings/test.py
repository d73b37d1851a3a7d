"""Test settings.

Tests run on PostgreSQL and Redis when they are reachable and on SQLite with an in-memory broker
otherwise; under CI (CI=true) both services are required and their absence is an error, so a
green run can never silently skip the concurrency tests.
"""

import os
import socket
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_str

from .base import *  # noqa: F403
from .base import VAR_DIR


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_IN_CI = env_bool("CI", False)
_pg_url = env_str("TEST_DATABASE_URL") or env_str("DATABASE_URL")
if not _pg_url and _reachable("127.0.0.1", 5432):
    _pg_url = "postgres://postgres@127.0.0.1:5432/mjgate"
_redis_url = env_str("TEST_REDIS_URL") or env_str("REDIS_URL")
if not _redis_url and _reachable("127.0.0.1", 6379):
    _redis_url = "redis://127.0.0.1:6379/14"
if _IN_CI and not (_pg_url and _redis_url):
    raise ImproperlyConfigured("CI needs PostgreSQL on 127.0.0.1:5432 and Redis on :6379.")

if _pg_url and env_str("MJGATE_TEST_DB") != "sqlite":
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(_pg_url)}
    DATABASES["default"]["TEST"] = {"NAME": env_str("MJGATE_TEST_DB_NAME") or "test_mjgate"}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "test.sqlite3"),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
TESTS_ON_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")

REDIS_URL = _redis_url
TEST_REDIS_URL = _redis_url
# Each test run gets its own queue so a worker started by an integration test consumes only
# what this run published.
CELERY_TASK_DEFAULT_QUEUE = env_str("MJGATE_TEST_QUEUE") or f"mjgate-test-{os.getpid()}"
# The workers integration tests start consume this run's queue only: webhooks go there too.
CELERY_WEBHOOKS_QUEUE = CELERY_TASK_DEFAULT_QUEUE
CELERY_RESULTS_QUEUE = CELERY_TASK_DEFAULT_QUEUE
CELERY_TASK_ROUTES = {
    "webhooks.*": {"queue": CELERY_WEBHOOKS_QUEUE},
    "tasks.finish_job": {"queue": CELERY_RESULTS_QUEUE},
    "tasks.derive_files": {"queue": CELERY_RESULTS_QUEUE},
}
CELERY_BROKER_URL = _redis_url or "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# One dispatch message per kick, as the tests that count messages expect; the coalescing tests
# (tests/tasks/test_dispatch_coalescing.py) switch it on with their own Redis flags.
TASK_DISPATCH_COALESCE = env_bool("TASK_DISPATCH_COALESCE", False)

SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdefghijklmnop"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Overridable so a Celery worker started by an integration test shares the test's media folder.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "test-media")
PUBLIC_BASE_URL = "http://testserver"
# Admin tests log staff in without a second factor; tests/operator turns this on to test it.
ADMIN_REQUIRE_MFA = False
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", False)
# Test prompts point at example.com, which tests cannot reach; the re-hosting tests turn it on.
REHOST_PROMPT_URLS = False
# Alerts open and resolve at the first evaluation that finds them so, as the alert tests
# expect; tests/monitoring/test_alert_damping.py sets its own damping.
ALERT_OPEN_AFTER_CHECKS = 1
ALERT_RESOLVE_AFTER_CHECKS = 1
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}
