"""Issue 19: fault injection on a real stack (PostgreSQL, Redis, a worker and beat).

Thirty tasks are in flight when one fault strikes: Redis restarts (its messages are lost; it
keeps none), every PostgreSQL connection of the test database is killed, or the worker gets
SIGKILL. Afterwards every task is terminal within two minutes, each settled exactly once
(``ledger_check`` clean, one hold and one capture or release per task), none submitted upstream
twice, and no API call during the fault answered a 5xx other than a clear 503.

Redis is this test's own ``redis-server`` on a free port (the machine's is shared); the
PostgreSQL connections killed are only those of this run's test database.
"""

from __future__ import annotations

import io
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from apps.accounts.models import MembershipTier
from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.models import SandboxJob
from apps.tasks.enums import TERMINAL_STATUSES, Action
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from config.celery import app
from tests.integration_support import ROOT, worker_environment
from tests.tasks.helpers import sandbox_account

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

TASKS = 30
SETTLE_TIMEOUT = 120.0
WORKER_ENV = {
    "TASK_LEASE_GRACE": "2",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "CELERY_TASK_TIME_LIMIT": "6",
    "TASK_SWEEP_INTERVAL": "2",
    "TASK_DISPATCH_INTERVAL": "1",
    "WEBHOOK_DELIVER_DUE_INTERVAL": "2",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A throw-away redis-server: no persistence, so a restart loses every message."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


def _reset_broker_pools() -> None:
    # Drop the references only: the pool lives on in kombu's global registry, keyed by URL,
    # and closing it would break every later user of the original broker.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def own_redis(tmp_path: Path, settings: Any) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path)
    redis.start()
    original = app.conf.broker_url
    settings.CELERY_BROKER_URL = redis.url
    app.conf.broker_url = redis.url
    _reset_broker_pools()
    yield redis
    app.conf.broker_url = original
    _reset_broker_pools()
    redis.stop()


@pytest.fixture
def beat(own_redis: OwnRedis, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = worker_environment(**WORKER_ENV)
    log = (tmp_path / "beat.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    yield process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def _kill_database_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def _statuses(ids: list[str]) -> dict[str, str]:
    return dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))


@pytest.mark.parametrize(
    "fault", ["redis_restart", "postgres_connections_killed", "worker_sigkill"]
)
def test_thirty_tasks_in_flight_survive_the_fault(
    fault,
    own_redis,
    beat,
    celery_worker_factory,
    organization,
    live_key,
    fund,
    settings,
):
    settings.TASK_LEASE_GRACE = 2
    organization.tier = MembershipTier.objects.get(code="PREMIUM")  # 50 unfinished tasks
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)
    sandbox_account("faults", modes="FAST", concurrency=10, duration="2")
    caller = Caller(organization=organization, api_key=live_key.api_key)
    worker = celery_worker_factory(**WORKER_ENV)

    ids = [
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a harbour at dawn {n}").task.pk
        for n in range(TASKS - 2)
    ] + [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"harbour {n}").task.pk
        for n in range(2)
    ]
    deadline = time.monotonic() + 30
    while SandboxJob.objects.filter(task_id__in=ids).count() < 5:
        assert time.monotonic() < deadline, f"nothing started: {_statuses(ids)}"
        time.sleep(0.1)

    client = Client(raise_request_exception=False)
    key = {"HTTP_MJ_API_SECRET": live_key.plaintext}
    answers: list[int] = []

    def probe() -> None:
        answers.append(client.get(f"/mj/task/{ids[0]}/fetch", **key).status_code)
        answers.append(client.get("/api/v1/balance", **key).status_code)

    if fault == "redis_restart":
        own_redis.stop()
        probe()
        time.sleep(3)
        probe()
        own_redis.start()
    elif fault == "postgres_connections_killed":
        assert _kill_database_connections() >= 1
        probe()
    else:
        worker.kill()
        probe()
        celery_worker_factory(**WORKER_ENV)

    started = time.monotonic()
    while time.monotonic() - started < SETTLE_TIMEOUT:
        probe()
        if all(status in TERMINAL_STATUSES for status in _statuses(ids).values()):
            break
        time.sleep(1)
    final = _statuses(ids)
    assert all(status in TERMINAL_STATUSES for status in final.values()), (
        f"not terminal after {SETTLE_TIMEOUT:.0f} s: "
        f"{sorted(s for s in final.values() if s not in TERMINAL_STATUSES)}\n{worker.log()[-3000:]}"
    )
    assert all(code < 500 or code == 503 for code in answers), answers
    if fault == "redis_restart":
        assert worker.alive, f"the worker did not survive the Redis restart:\n{worker.log()}"

    # Never submitted upstream twice; settled exactly once; the ledger adds up.
    jobs = SandboxJob.objects.filter(task_id__in=ids)
    assert set(jobs.values_list("submit_calls", flat=True)) <= {1}
    assert jobs.values("task_id").distinct().count() == jobs.count()
    for task_id in ids:
        kinds = list(
            LedgerEntry.objects.filter(task_id=task_id)
            .order_by("id")
            .values_list("kind", flat=True)
        )
        assert kinds in (
            [EntryKind.HOLD, EntryKind.CAPTURE],
            [EntryKind.HOLD, EntryKind.RELEASE],
        ), (
            task_id,
            kinds,
        )
    call_command("ledger_check", stdout=io.StringIO(), stderr=io.StringIO())  # raises on drift
