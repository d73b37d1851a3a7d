"""What every dialect's task JSON is made of: timestamps, queue estimates, result URLs.

The payload modules (``*/payloads.py``) build a task's JSON from these, in a response and in a
task's webhook body. Webhook bodies are rendered by Celery workers, so this module, and the
payload modules, import no web framework: a worker process never loads DRF (about 4 MiB in
each process; issue 15, P6). The request-side helpers live in ``common``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from datetime import datetime

from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.tasks.selectors import QueueEstimate, task_queue_estimate, task_queue_estimates
from apps.tasks.storage import file_url


def epoch_ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


#: Estimates read for a whole page by ``queue_estimates_prefetch``, each used once by
#: ``queue_estimate`` (weak: a page's tasks leave nothing behind once answered).
_prefetched: weakref.WeakKeyDictionary[Task, QueueEstimate] = weakref.WeakKeyDictionary()


def queue_estimates_prefetch(tasks: Iterable[Task]) -> None:
    """Read the queue estimates of a page of tasks at once (``task_queue_estimates``: a few
    statements for the page instead of a few per queued task); ``queue_estimate`` of each of
    them then answers from them. Lists call it before rendering their rows."""
    tasks = list(tasks)
    estimates = task_queue_estimates(tasks=tasks)
    for task in tasks:
        if task.pk in estimates:
            _prefetched[task] = estimates[task.pk]


def queue_estimate(task: Task) -> QueueEstimate | None:
    """Where a queued task stands in its pool's fair queue (None unless it is queued): what
    every dialect shows in fetch, lists and queued-task webhook bodies."""
    if task.status != Status.NOT_START:
        return None
    prefetched = _prefetched.pop(task, None)
    return prefetched if prefetched is not None else task_queue_estimate(task=task)


def result_image_url(task: Task) -> str | None:
    """The main result image (the grid for grid actions)."""
    return file_url((task.result or {}).get("image"))


def result_split_urls(task: Task) -> list[str]:
    """The four split images of a grid, in U1…U4 order; empty for single images."""
    urls = [file_url(name) for name in (task.result or {}).get("splits") or []]
    return [url for url in urls if url]


def result_video_urls(task: Task) -> list[str]:
    """A VIDEO task's MP4 clips, in batch order; empty for every other task."""
    urls = [file_url(name) for name in (task.result or {}).get("videos") or []]
    return [url for url in urls if url]


def stored_file_url(name: str) -> str:
    """The public URL of a file the task services stored (an upload, an input)."""
    return file_url(name) or ""


def result_thumbnail_url(task: Task) -> str | None:
    return file_url((task.result or {}).get("thumb"))
