"""Celery entry points: ids in, one service call, nothing else (STYLE rule 5)."""

from __future__ import annotations

from celery import shared_task

from . import lifecycle, scheduling


@shared_task(name="tasks.dispatch", acks_late=True, ignore_result=True)
def dispatch() -> None:
    scheduling.dispatch_pending()


@shared_task(name="tasks.start_job", acks_late=True, ignore_result=True)
def start_job(task_id: str) -> None:
    lifecycle.task_start(task_id=task_id)


@shared_task(name="tasks.poll_job", acks_late=True, ignore_result=True)
def poll_job(task_id: str, token: str) -> None:
    lifecycle.task_poll(task_id=task_id, token=token)


@shared_task(name="tasks.sweep", acks_late=True, ignore_result=True)
def sweep() -> None:
    scheduling.tasks_sweep()
