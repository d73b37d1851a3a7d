"""Celery entry points of the task pipeline: ids in, one service call, nothing else (STYLE 5).

Every task is idempotent and ``acks_late``: a message redelivered after a worker died runs
again harmlessly, because the services it calls are compare-and-set transitions. Time limits
come from settings (``CELERY_TASK_SOFT_TIME_LIMIT`` / ``CELERY_TASK_TIME_LIMIT``); no task waits
for a job — a poll is one step that schedules the next.

Nothing imports this module: services send these tasks by name through
``apps.core.messaging``, and Celery finds the module by name (``config/celery.py``). Each body
imports the service it runs, so the pipeline's modules never depend on their entry points.
"""

from __future__ import annotations

from celery import shared_task

from apps.core.messaging import send_now

#: Seconds before a dispatch that met another dispatcher's account locks runs again.
CONTENDED_DISPATCH_RETRY = 0.5


@shared_task(name="tasks.dispatch", acks_late=True, ignore_result=True)
def dispatch() -> None:
    from apps.tasks.scheduling import dispatch_run  # entry points import their service late

    if dispatch_run().contended:
        send_now("tasks.dispatch", countdown=CONTENDED_DISPATCH_RETRY)


@shared_task(name="tasks.start_job", acks_late=True, ignore_result=True)
def start_job(task_id: str) -> None:
    from apps.tasks.lifecycle import task_start  # entry points import their service late

    task_start(task_id=task_id)


@shared_task(name="tasks.poll_job", acks_late=True, ignore_result=True)
def poll_job(task_id: str, token: str) -> None:
    from apps.tasks.scheduling import poll_step  # entry points import their service late

    poll_step(task_id=task_id, token=token)


@shared_task(name="tasks.finish_job", acks_late=True, ignore_result=True)
def finish_job(task_id: str, token: str) -> None:
    from apps.tasks.lifecycle import task_finish  # entry points import their service late

    task_finish(task_id=task_id, token=token)


@shared_task(name="tasks.derive_files", acks_late=True, ignore_result=True)
def derive_files(task_id: str) -> None:
    from apps.tasks.lifecycle import task_derive_files  # entry points import their service late

    task_derive_files(task_id=task_id)


@shared_task(name="tasks.sweep", acks_late=True, ignore_result=True)
def sweep() -> None:
    from apps.tasks.scheduling import tasks_sweep  # entry points import their service late

    tasks_sweep()
