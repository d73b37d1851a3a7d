"""Production settings: `check --deploy` is clean with the documented environment, and the
settings refuse to start without a real SECRET_KEY or any other required variable."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSECURE_DEFAULT = "django-insecure-local-development-key-change-me"
_FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
# Variables the settings read that must not leak in from the developer's shell.
_SCRUB = {
    "DJANGO_SETTINGS_MODULE",
    # Browser tests set it in this process; check --deploy rightly refuses it (async.E001).
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "PUBLIC_BASE_URL",
    "CELERY_BROKER_URL",
    "DEBUG",
    "FIELD_ENCRYPTION_KEYS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
}


def _environment(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        MJGATE_VAR_DIR=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="mjgate.example.com,api.mjgate.example.com",
        # Checks do not connect: unreachable hosts prove nothing is contacted.
        DATABASE_URL="postgres://mjgate:secret@db.invalid:5432/mjgate",
        REDIS_URL="redis://redis.invalid:6379/0",
        PUBLIC_BASE_URL="https://mjgate.example.com",
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _check(tmp_path: Path, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_environment(tmp_path, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy_is_clean(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


@pytest.mark.parametrize(
    "secret_key",
    [None, "", INSECURE_DEFAULT, "short-but-random-Xy7", "a" * 80],
    ids=["missing", "empty", "insecure-default", "too-short", "one-character"],
)
def test_refuses_to_start_without_a_real_secret_key(tmp_path, secret_key):
    result = _check(tmp_path, SECRET_KEY=secret_key)
    assert result.returncode != 0
    assert (
        "SECRET_KEY must be set to a long random value (50+ characters) in production."
        in result.stderr
    )


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS must be set in production."),
        ("DATABASE_URL", "The environment variable DATABASE_URL must be set."),
        ("REDIS_URL", "The environment variable REDIS_URL must be set."),
        ("PUBLIC_BASE_URL", "The environment variable PUBLIC_BASE_URL must be set."),
    ],
)
def test_refuses_to_start_without_a_required_variable(tmp_path, variable, message):
    result = _check(tmp_path, **{variable: None})
    assert result.returncode != 0
    assert message in result.stderr


# --- documentation stays in sync with the settings --------------------------------------------

_ENV_READ = re.compile(
    r"""(?:env_(?:str|int|bool|float|list|required)\(\s*|os\.environ(?:\.get)?[(\[]\s*)"([A-Z][A-Z0-9_]*)\""""
)
_ENV_EXAMPLE_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# Read by docker/compose.yml or gunicorn, not by the settings.
_COMPOSE_ONLY = {
    "POSTGRES_PASSWORD",
    "MJGATE_HTTP_PORT",
    "WEB_CONCURRENCY",
    "CELERY_WORKER_CONCURRENCY",
    "CELERY_WEBHOOK_CONCURRENCY",
    "CELERY_RESULTS_CONCURRENCY",
}


def _settings_variables() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "config" / "settings").glob("*.py"):
        found |= set(_ENV_READ.findall(path.read_text()))
    return found - {"DJANGO_SETTINGS_MODULE"}


def _env_example_variables() -> set[str]:
    listed = set(_ENV_EXAMPLE_LINE.findall((ROOT / ".env.example").read_text()))
    return listed - _COMPOSE_ONLY


def _readme_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}


def test_env_example_lists_every_settings_variable():
    settings_vars = _settings_variables()
    assert len(settings_vars) > 40
    assert sorted(settings_vars - _env_example_variables()) == [], "add these to .env.example"


def test_readme_documents_every_settings_variable():
    assert sorted(_settings_variables() - _readme_variables()) == [], "add these to README.md"


def test_readme_and_env_example_list_the_same_variables():
    assert sorted(_env_example_variables() ^ _readme_variables()) == []


# --- bounded waits on a dead Redis --------------------------------------------------------------

_PROBES = {
    # Every API request touches the cache (rate limit, idempotency).
    "cache": "from django.core.cache import cache; cache.get('probe')",
    # Every submit publishes a Celery message from the web process.
    "publish": "from config.celery import app; app.send_task('tasks.dispatch')",
    # Every request that reads anything, and /readyz.
    "database": "from django.db import connection; connection.ensure_connection()",
}
_PROBE = """
import sys, time, django
django.setup()
started = time.monotonic()
try:
    exec(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, round(time.monotonic() - started, 1))
else:
    print("NoError", round(time.monotonic() - started, 1))
"""


@pytest.mark.slow
@pytest.mark.parametrize("probe", sorted(_PROBES))
def test_a_service_host_that_drops_packets_fails_fast(tmp_path, probe):
    """A listener with a full backlog drops our SYNs, like a Redis or PostgreSQL host that is
    down. Without timeouts the publish and the database connect wait for the kernel (minutes)
    and the cache up to redis-py's own default; a web worker stuck that long is a worker lost."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    port = listener.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, _PROBES[probe]],
            cwd=ROOT,
            env=_environment(
                tmp_path,
                REDIS_URL=f"redis://127.0.0.1:{port}/0",
                DATABASE_URL=f"postgres://mjgate:secret@127.0.0.1:{port}/mjgate",
                FIELD_ENCRYPTION_KEYS=_FERNET_KEY,
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        for sock in (listener, *fillers):
            sock.close()
    name, seconds = result.stdout.split()
    expected = {
        "cache": "TimeoutError",
        "publish": "OperationalError",
        "database": "OperationalError",
    }
    assert name == expected[probe], result.stdout + result.stderr
    # The publish retries its connection a few times (Celery's retry policy): 4 x 2 s at most.
    assert float(seconds) < {"cache": 4.0, "publish": 10.0, "database": 7.0}[probe]


# --- what production settings resolve to --------------------------------------------------------

_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({name: getattr(s, name) for name in [
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "CSRF_TRUSTED_ORIGINS", "TRUSTED_PROXY_COUNT",
    "ALLAUTH_TRUSTED_PROXY_COUNT", "ACCOUNT_EMAIL_VERIFICATION", "ACCOUNT_PREVENT_ENUMERATION",
    "SECRET_KEY_FALLBACKS", "MJGATE_PRODUCTION",
]}, default=list))
"""


def _dump(tmp_path, **overrides):
    result = subprocess.run(
        [sys.executable, "-c", _DUMP],
        cwd=ROOT,
        env=_environment(tmp_path, FIELD_ENCRYPTION_KEYS=_FERNET_KEY, **overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_production_settings_resolve_to_a_hardened_configuration(tmp_path):
    old_key = secrets.token_urlsafe(64)
    assert _dump(
        tmp_path,
        TRUSTED_PROXY_COUNT="1",
        CSRF_TRUSTED_ORIGINS="https://admin.mjgate.example.com",
        SECRET_KEY_FALLBACKS=old_key,
    ) == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        # The public address is trusted for form posts whatever the proxy does to Host.
        "CSRF_TRUSTED_ORIGINS": ["https://admin.mjgate.example.com", "https://mjgate.example.com"],
        "TRUSTED_PROXY_COUNT": 1,
        # allauth's login/sign-up/reset rate limits see the client behind the proxy.
        "ALLAUTH_TRUSTED_PROXY_COUNT": 1,
        "ACCOUNT_EMAIL_VERIFICATION": "mandatory",
        "ACCOUNT_PREVENT_ENUMERATION": True,
        "SECRET_KEY_FALLBACKS": [old_key],
        # seed_demo (a superuser with a published password) refuses to run.
        "MJGATE_PRODUCTION": True,
    }


def test_public_base_url_must_be_an_absolute_url(tmp_path):
    result = _check(tmp_path, PUBLIC_BASE_URL="mjgate.example.com")
    assert result.returncode != 0
    assert "PUBLIC_BASE_URL must be an absolute URL such as https://mjgate.example.com." in (
        result.stderr
    )
