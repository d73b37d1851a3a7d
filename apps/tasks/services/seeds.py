"""The seed of a task's image."""

from __future__ import annotations

from django.db import transaction

from apps.accounts.models import Organization
from apps.core.errors import ServiceUnavailable
from apps.engines.base import EngineError, get_engine

from ..enums import Status
from ..models import Task
from ..selectors import task_get

UPSTREAM_SEED = "upstream_seed"


def task_image_seed(*, organization: Organization, task_id: str) -> int | None:
    """The seed of a task's image (``GET /mj/task/{id}/image-seed``, TTAPI ``seed``).

    For engines whose upstream picks the seed it is asked once, when a client first wants it
    for a finished task, and kept on the task; until then, and for unfinished tasks, the seed
    is unknown (None) unless the prompt fixed it. Other engines know it from the start.
    """
    task = task_get(organization=organization, task_id=task_id)
    state = task.engine_state or {}
    if task.seed is not None or UPSTREAM_SEED in state or not task.engine:
        return task.seed
    try:
        engine = get_engine(task.engine)
    except KeyError:
        return None
    account = task.upstream_account
    if not engine.seed_from_upstream or task.status != Status.SUCCESS or account is None:
        return None
    try:
        found = engine.image_seed(account=account, task=task)
    except EngineError as exc:
        raise ServiceUnavailable(
            "The upstream could not be asked for this task's seed now; try again shortly.",
            code="upstream_unavailable",
        ) from exc
    # A finished task's other fields never change again; only this cache is written, once.
    with transaction.atomic():
        current = (
            Task.objects.select_for_update()
            .filter(pk=task.pk)
            .values_list("engine_state", flat=True)
            .first()
        )
        Task.objects.filter(pk=task.pk, seed__isnull=True).update(
            seed=found, engine_state={**(current or {}), UPSTREAM_SEED: found}
        )
    return found
