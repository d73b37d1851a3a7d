"""Celery entry points: ids in, one service call, nothing else (STYLE rule 5).

Every task is idempotent and ``acks_late``: a message redelivered after a worker died runs
again harmlessly, because the services it calls are compare-and-set transitions. Time limits
come from settings (``CELERY_TASK_SOFT_TIME_LIMIT`` / ``CELERY_TASK_TIME_LIMIT``); no task waits
for a job — a poll is one step that schedules the next.
"""

from __future__ import annotations

from celery import shared_task

from . import lifecycle, scheduling

#: Seconds before a dispatch that met another dispatcher's account locks runs again.
CONTENDED_DISPATCH_RETRY = 0.5


@shared_task(name="tasks.dispatch", acks_late=True, ignore_result=True)
def dispatch() -> None:
    if scheduling.dispatch_pending().contended:
        dispatch.apply_async(countdown=CONTENDED_DISPATCH_RETRY)


@shared_task(name="tasks.start_job", acks_late=True, ignore_result=True)
def start_job(task_id: str) -> None:
    lifecycle.task_start(task_id=task_id)


@shared_task(name="tasks.poll_job", acks_late=True, ignore_result=True)
def poll_job(task_id: str, token: str) -> None:
    lifecycle.task_poll(task_id=task_id, token=token)


@shared_task(name="tasks.sweep", acks_late=True, ignore_result=True)
def sweep() -> None:
    scheduling.tasks_sweep()
