"""Production settings: `check --deploy` is clean with the documented environment, and the
settings refuse to start without a real SECRET_KEY or any other required variable."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSECURE_DEFAULT = "django-insecure-local-development-key-change-me"
# Variables the settings read that must not leak in from the developer's shell.
_SCRUB = {
    "DJANGO_SETTINGS_MODULE",
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
