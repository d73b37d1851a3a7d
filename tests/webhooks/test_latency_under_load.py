"""Issue 19: webhook deliveries do not queue behind engine work.

A real stack: an engine worker on the default queue with every slot held by a long job (and
more queued behind them), and the webhook worker on its own queue, as the run command and
compose run them. Task changes published meanwhile reach the receiver at once: the recorded
first attempt is within seconds of the message, while the engine jobs (a minute long) are
still running. Behind them, on one queue, the first attempt would wait a minute or more.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction

from apps.core.messaging import broker_breaker_reset
from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.models import EventState, WebhookDelivery, WebhookEvent
from tests.integration_support import (
    ROOT,
    STARTUP_TIMEOUT,
    Worker,
    _ping,
    purge_queue,
    wait_for,
    worker_environment,
)

from .busy_engine import BUSY_TASK

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

#: Engine worker slots, all taken by a long job, with as many more jobs queued behind them.
ENGINE_SLOTS = 2
BUSY_SECONDS = 60.0
#: The bound on event -> first attempt. Generous for a loaded machine, yet far below the
#: minute the message would wait behind the engine jobs on a shared queue.
FIRST_ATTEMPT_BOUND = 3.0


def _start(log_dir: Path, queue: str, *extra: str, **env: Any) -> Worker:
    name = f"mjgate-test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = log_dir / f"{name.split('@')[0]}.log"
    command = [
        *[sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-n", name],
        *["--loglevel", "INFO", "--without-gossip", "--without-mingle", *extra],
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=worker_environment(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(name=name, process=process, log_path=log_path)
    wait_for(
        lambda: not worker.alive or _ping(name),
        timeout=STARTUP_TIMEOUT,
        what=lambda: f"worker {name} to start:\n{worker.log()}",
    )
    assert worker.alive, worker.log()
    return worker


@pytest.fixture
def webhooks_queue() -> Any:
    """Route the outbox's Celery messages to a queue of their own, as production does."""
    from config.celery import app

    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-webhooks"

    def route(routes: Any) -> None:
        app.conf.task_routes = routes
        app.amqp.flush_routes()
        # The router is built once per process and keeps the table it was built with.
        app.amqp.__dict__.pop("router", None)

    previous = app.conf.task_routes
    route({"webhooks.*": {"queue": queue}})
    yield queue
    route(previous)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_first_attempts_do_not_wait_for_busy_engine_workers(
    make_task, receiver, webhooks_queue, tmp_path
):
    from config.celery import app

    if not getattr(settings, "TESTS_ON_POSTGRES", False):
        pytest.skip("a real worker needs PostgreSQL")
    purge_queue()
    # A send that failed in an earlier test of this process must not hold our messages back.
    broker_breaker_reset()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    workers: list[Worker] = []
    try:
        workers.append(
            _start(
                tmp_path,
                settings.CELERY_TASK_DEFAULT_QUEUE,
                *["--pool", "threads", "--concurrency", str(ENGINE_SLOTS)],
                *["--include", "tests.webhooks.busy_engine"],
            )
        )
        for index in range(2 * ENGINE_SLOTS):
            app.send_task(
                BUSY_TASK,
                args=[str(jobs), f"job{index}", BUSY_SECONDS],
                queue=settings.CELERY_TASK_DEFAULT_QUEUE,
            )
        workers.append(
            _start(
                tmp_path,
                webhooks_queue,
                *["--pool", "threads", "--concurrency", "4"],
                WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="true",
            )
        )
        # Every engine slot holds a long job before anything is published.
        wait_for(
            lambda: len(list(jobs.glob("*.started"))) == ENGINE_SLOTS,
            what=lambda: (
                "the engine jobs to start; engine worker log:\n" + workers[0].log()[-3000:]
            ),
        )

        published: list[WebhookEvent] = []
        for step in range(5):
            task = make_task(notify_hook=receiver.url(f"/hook{step}"))
            with transaction.atomic():
                Task.objects.filter(pk=task.pk).update(status="SUBMITTED")
                published.extend(task_changed(task=task))
            time.sleep(0.2)
        ids = [event.pk for event in published]
        wait_for(
            lambda: (
                WebhookEvent.objects.filter(pk__in=ids, state=EventState.SUCCEEDED).count()
                == len(ids)
            ),
            what=lambda: "the deliveries; webhook worker log:\n" + workers[1].log()[-3000:],
        )
        # The engine jobs are still running: the deliveries did not wait for them.
        assert list(jobs.glob("*.done")) == []
        assert len(list(jobs.glob("*.started"))) == ENGINE_SLOTS
    finally:
        for worker in workers:
            worker.kill()

    delays = []
    for event in WebhookEvent.objects.filter(pk__in=ids):
        first = WebhookDelivery.objects.get(event=event, attempt=1)
        assert first.state == "succeeded"
        delays.append((first.attempted_at - event.created_at).total_seconds())
    assert len(receiver.requests) == len(ids)
    assert max(delays) < FIRST_ATTEMPT_BOUND, delays
    assert sorted(delays)[len(delays) // 2] < 1.0, delays
