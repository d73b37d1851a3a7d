"""The one module that sends Celery messages.

Services never import a Celery entry-point module: they call :func:`send_after_commit` with the
task's *name*, and the message leaves when the surrounding transaction commits (at once outside
one). That keeps imports one-way (entry points import services, never the reverse) and keeps
the STYLE rule 5 promise that a worker never sees a row that is not committed yet.

PostgreSQL is the source of truth: a message lost to a broker outage is only a delay, because
beat's safety nets (the sweeper, the due-deliveries pickup) re-drive whatever the rows say is
still owed. So a failed send is logged, never raised into the request that caused it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

#: After a send failed, further sends are skipped this long (the rows re-drive the work): during
#: a broker outage a request should not wait for the broker's connect timeout again and again.
SEND_RETRY_SECONDS = 5.0
_breaker_lock = threading.Lock()
_skip_until = 0.0


def _broker_presumed_down() -> bool:
    return time.monotonic() < _skip_until


def _broker_failed() -> None:
    global _skip_until
    with _breaker_lock:
        _skip_until = time.monotonic() + SEND_RETRY_SECONDS


def broker_breaker_reset() -> None:
    """Forget a past failure (tests, and a process that knows the broker is back)."""
    global _skip_until
    with _breaker_lock:
        _skip_until = 0.0


def send_now(
    name: str,
    *args: Any,
    countdown: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> None:
    """Send the message now. Use it only where no transaction can be open (a Celery task
    re-queueing itself); everything else goes through :func:`send_after_commit`."""
    if _broker_presumed_down():
        logger.info("broker presumed down; %s left to the safety net", name)
        return
    options: dict[str, Any] = {}
    if countdown:
        options["countdown"] = countdown
    if queue:
        options["queue"] = queue
    if priority is not None:
        # On Redis, 0 is served first and 9 last within a queue (kombu's priority steps).
        options["priority"] = priority
    try:
        # The registered task object when this process knows it (keeps task_always_eager and
        # the routing of the task's own options); otherwise a plain send by name.
        task = current_app.tasks.get(name)
        if task is not None:
            task.apply_async(args=args, **options)
        else:
            current_app.send_task(name, args=args, **options)
    except Exception:
        # The broker is down or refused the message: the durable rows re-drive the work.
        _broker_failed()
        logger.warning("could not send %s; the safety net will re-drive it", name, exc_info=True)


def send_after_commit(
    name: str,
    *args: Any,
    countdown: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    counted_from: float | None = None,
) -> None:
    """Send Celery task ``name`` with ``args`` once the current transaction commits.

    ``counted_from``: the ``time.monotonic()`` the ``countdown`` runs from (when what it
    counts down to was learnt), so the time until the commit is not added to it."""
    if counted_from is None:
        transaction.on_commit(
            lambda: send_now(name, *args, countdown=countdown, queue=queue, priority=priority)
        )
        return

    def send() -> None:
        left = max(0.0, (countdown or 0.0) - (time.monotonic() - counted_from))
        send_now(name, *args, countdown=left, queue=queue, priority=priority)

    transaction.on_commit(send)
