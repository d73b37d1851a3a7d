"""Issue 19: broker and queue settings (what can be checked without a server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis.exceptions
from kombu.transport import redis as kombu_redis

import config.celery  # noqa: F401  (applies the kombu patch)

ROOT = Path(__file__).resolve().parents[2]


class _ClosedChannel:
    """A channel whose connection was closed under it, as during a Redis restart."""

    connection = None


def test_a_channel_of_a_closed_connection_is_a_recoverable_connection_error():
    try:
        kombu_redis.Channel._connparams(_ClosedChannel())  # type: ignore[arg-type]
    except redis.exceptions.ConnectionError as exc:
        # Celery reconnects on the transport's connection errors instead of exiting.
        assert isinstance(exc, kombu_redis.Transport.connection_errors)
    else:
        raise AssertionError("expected a ConnectionError")


def _settings(*names: str, **env: str) -> list[str]:
    code = "import django; django.setup(); from django.conf import settings; " + "; ".join(
        f"print(repr(settings.{name}))" for name in names
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_WEBHOOKS_QUEUE"}
    }
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.splitlines()


def test_webhook_tasks_have_their_own_queue(tmp_path):
    routes, queue, default = _settings(
        "CELERY_TASK_ROUTES",
        "CELERY_WEBHOOKS_QUEUE",
        "CELERY_TASK_DEFAULT_QUEUE",
        DJANGO_SETTINGS_MODULE="config.settings.local",
        MJGATE_VAR_DIR=str(tmp_path),
    )
    assert routes == (
        "{'webhooks.*': {'queue': 'webhooks'}, 'tasks.finish_job': {'queue': 'mjgate-results'}, "
        "'tasks.derive_files': {'queue': 'mjgate-results'}}"
    )
    assert (queue, default) == ("'webhooks'", "'mjgate'")


def test_the_embedded_broker_is_a_sqlite_file_in_wal_mode(tmp_path):
    (url,) = _settings(
        "CELERY_BROKER_URL",
        DJANGO_SETTINGS_MODULE="config.settings.local",
        MJGATE_VAR_DIR=str(tmp_path),
    )
    assert url == repr(f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")
    mode = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(tmp_path / 'broker.sqlite3')!r}).execute('PRAGMA journal_mode').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert mode == "wal"


def test_with_redis_the_broker_is_redis(tmp_path):
    (url,) = _settings(
        "CELERY_BROKER_URL",
        DJANGO_SETTINGS_MODULE="config.settings.local",
        MJGATE_VAR_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:6379/3",
    )
    assert url == "'redis://127.0.0.1:6379/3'"


def test_the_compose_file_and_the_image_run_several_workers_and_a_webhooks_worker():
    compose = (ROOT / "docker" / "compose.yml").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "--workers ${WEB_CONCURRENCY:-4}" in dockerfile
    assert "--max-requests" in dockerfile
    assert "\n  webhooks:\n" in compose
    assert "--queues=webhooks" in compose.split("\n  webhooks:\n", 1)[1].split("\n\n  ", 1)[0]
    assert "restart: unless-stopped" in compose.split("x-app: &app", 1)[1].split("services:", 1)[0]
