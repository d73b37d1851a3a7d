"""Logs: JSON lines; the local run keeps Celery's periodic chatter out of the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_EMIT = """
import logging, django
django.setup()
logging.getLogger("celery.beat").info(
    "Scheduler: Sending due task %s (%s)", "tasks-dispatch", "tasks.dispatch")
logging.getLogger("celery.worker.strategy").info(
    "Task %s[%s] received", "webhooks.deliver_due", "c6b8")
logging.getLogger("celery.app.trace").info(
    "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
    {"name": "tasks.sweep", "id": "9bc0", "runtime": 0.01, "return_value": None})
logging.getLogger("celery.app.trace").info(
    "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
    {"name": "tasks.start_job", "id": "a1", "runtime": 0.2, "return_value": None})
logging.getLogger("celery.app.trace").error(
    "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
    {"name": "tasks.dispatch", "id": "b2", "exc": "OperationalError()"})
logging.getLogger("celery.apps.worker").info("worker@host ready.")
"""


def _run(settings_module: str, tmp_path: Path) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(DJANGO_SETTINGS_MODULE=settings_module, MJGATE_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", _EMIT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def test_the_local_run_drops_only_the_periodic_chatter(tmp_path):
    messages = [record["msg"] for record in _run("config.settings.local", tmp_path)]
    assert messages == [
        "Task tasks.start_job[a1] succeeded in 0.2s: None",
        "Task tasks.dispatch[b2] raised unexpected: OperationalError()",
        "worker@host ready.",
    ]


def test_elsewhere_every_line_is_kept(tmp_path):
    records = _run("config.settings.base", tmp_path)
    assert len(records) == 6
    assert records[0]["logger"] == "celery.beat"
    assert records[0]["level"] == "INFO"
