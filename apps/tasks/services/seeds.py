"""The seed of a task's image."""

from __future__ import annotations

from apps.accounts.models import Organization

from ..lifecycle import task_upstream_seed
from ..selectors import task_get


def task_image_seed(*, organization: Organization, task_id: str) -> int | None:
    """The seed of a task's image (``GET /mj/task/{id}/image-seed``, TTAPI ``seed``).

    For engines whose upstream picks the seed it is asked once, when a client first wants it
    for a finished task, and kept on the task; until then, and for unfinished tasks, the seed
    is unknown (None) unless the prompt fixed it. Other engines know it from the start.
    """
    task = task_get(organization=organization, task_id=task_id)
    return task_upstream_seed(task=task)
