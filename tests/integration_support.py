"""Real Celery workers for integration tests (STYLE: eager mode hides the bugs that matter).

``celery_worker`` starts ``celery -A config worker`` as a subprocess on the test's Redis queue
and the test's PostgreSQL database, with the test's media folder, and stops it afterwards.
Use it from tests marked ``integration`` + ``postgres`` with
``django_db(transaction=True)`` — the worker only sees committed rows::

    from tests.integration_support import celery_worker  # noqa: F401  (in a conftest.py)

    def test_x(celery_worker): ...

``celery_worker_factory`` starts several, with their own environment (``TASK_POLL_INTERVAL``,
``TASK_LEASE_GRACE`` …) and lets a test kill one (``worker.kill()`` sends SIGKILL to the whole
process group, so nothing of it survives).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connection

from apps.tasks.enums import TERMINAL_STATUSES, Status
from apps.tasks.models import Task

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
#: Seconds between poll steps in workers started here (the product default is 2 s).
POLL_INTERVAL = 0.2
#: A worker imports Django and connects to Redis first; on a loaded machine that is slow.
STARTUP_TIMEOUT = 120.0
#: How long an integration test waits for a condition before it gives up. Generous on purpose:
#: a loaded machine (a full run, ``-n 2``, other work) slows subprocess workers by several times,
#: and a wait returns as soon as its condition holds, so a healthy run never pays for the bound.
WAIT_TIMEOUT = 180.0


def wait_for(
    condition: Callable[[], T | bool | None],
    *,
    timeout: float = WAIT_TIMEOUT,
    interval: float = 0.05,
    between: Callable[[], object] | None = None,
    what: str | Callable[[], object] = "the condition",
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    ``between`` runs after every unsuccessful check (e.g. the sweeper, as beat would run it).
    On timeout the AssertionError says ``what`` was awaited (call it for the current state).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"still waiting after {timeout:.0f} s for {described}")
        if between is not None:
            between()
        time.sleep(interval)


@dataclass
class Worker:
    """A running ``celery worker`` subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as if the machine lost the process: no clean shutdown, no acks."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_environment(**overrides: Any) -> dict[str, str]:
    """The environment of a worker that shares this test process's database, queue and media."""
    db = connection.settings_dict
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    password = db.get("PASSWORD") or ""
    credentials = f"{user}:{password}" if password else user
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "TEST_DATABASE_URL": f"postgres://{credentials}@{host}:{port}/{db['NAME']}",
        "TEST_REDIS_URL": str(settings.CELERY_BROKER_URL),
        "MJGATE_TEST_QUEUE": str(settings.CELERY_TASK_DEFAULT_QUEUE),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "TASK_POLL_INTERVAL": str(POLL_INTERVAL),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MJGATE_TEST_DB", None)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def purge_queue() -> None:
    """Drop messages earlier tests published to this run's queue (their rows are gone)."""
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def _ping(name: str) -> bool:
    from config.celery import app

    replies = app.control.ping(destination=[name], timeout=0.5)
    return any(name in reply for reply in replies or [])


def start_worker(
    log_dir: Path, *, pool: str = "threads", concurrency: int = 8, **env_overrides: Any
) -> Worker:
    name = f"mjgate-test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = log_dir / f"{name.split('@')[0]}.log"
    command = [
        sys.executable,
        "-m",
        "config.celery_cli",
        "-A",
        "config",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-Q",
        str(settings.CELERY_TASK_DEFAULT_QUEUE),
        "-n",
        name,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    env = worker_environment(**env_overrides)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches pool children too
        )
    worker = Worker(name=name, process=process, log_path=log_path, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if not worker.alive:
            raise RuntimeError(f"celery worker exited at startup:\n{worker.log()}")
        if _ping(name):
            return worker
    worker.kill()
    raise RuntimeError(
        f"celery worker did not answer a ping in {STARTUP_TIMEOUT} s:\n{worker.log()}"
    )


@pytest.fixture
def celery_worker_factory(
    transactional_db: None, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    """Start workers on demand; all of them are stopped when the test ends."""
    if not getattr(settings, "TESTS_ON_POSTGRES", False):
        pytest.skip("a real worker needs PostgreSQL")
    if not str(settings.CELERY_BROKER_URL).startswith("redis://"):
        pytest.skip("a real worker needs Redis")
    purge_queue()
    started: list[Worker] = []

    def start(**kwargs: Any) -> Worker:
        worker = start_worker(tmp_path, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    purge_queue()


@pytest.fixture
def celery_worker(celery_worker_factory: Callable[..., Worker]) -> Worker:
    """One threaded worker with a 0.2 s poll interval, for the length of the test."""
    return celery_worker_factory()


class ProgressWatcher:
    """Record a task's progress while it runs, from a thread of its own.

    Started right after the submit, it sees the progress steps even when the test's own thread
    is busy (submitting more work on a loaded machine) while the worker runs the job.
    """

    def __init__(self, task_id: str, *, interval: float = 0.02) -> None:
        self.task_id = task_id
        self.interval = interval
        self.seen: list[int] = []
        self.status = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT
        try:
            while time.monotonic() < deadline:
                task = Task.objects.only("status", "progress").get(pk=self.task_id)
                self.status = task.status
                if task.status == Status.IN_PROGRESS and (
                    not self.seen or task.progress != self.seen[-1]
                ):
                    self.seen.append(task.progress)
                if task.status in TERMINAL_STATUSES:
                    return
                time.sleep(self.interval)
        finally:
            connection.close()  # this thread's own connection

    def join(self) -> list[int]:
        """Wait until the task finished (or the generous bound passed); the progress seen."""
        self._thread.join(WAIT_TIMEOUT + 10)
        return self.seen
