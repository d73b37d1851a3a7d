"""Retention of the discord engine's job records (``DiscordJob``).

A row matters while its task runs (the gateway fills it in, ``poll`` and ``find_job`` read it)
and a little after (a seed asked for on a finished task reacts on its result message). Rows
nobody has touched for ``DISCORD_JOB_RETENTION_DAYS`` (default 30) belong to tasks that ended
long ago — a task runs for minutes, a second step waits at most a day — and are deleted by the
hourly beat task ``discord.purge_jobs``. A follow-up pressed on such a task still works: what
a press needs is kept in the task's own engine state, not here. Only the ✉️ seed of a task older
than the retention can no longer be asked for.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import DiscordJob

logger = logging.getLogger(__name__)

#: Rows deleted per transaction.
PURGE_BATCH = 1000
#: The purge stops taking batches after this many seconds; the next run carries on.
TIME_BUDGET = 40.0
#: The shortest retention honoured: younger rows may still belong to a task waiting for its
#: second step (a day at most), so a smaller setting is raised to this.
MIN_RETENTION = timedelta(days=2)


def retention() -> timedelta | None:
    """How long untouched job records are kept; None keeps them forever (setting 0)."""
    days = float(getattr(settings, "DISCORD_JOB_RETENTION_DAYS", 30))
    if days <= 0:
        return None
    return max(timedelta(days=days), MIN_RETENTION)


def discord_jobs_purge(
    *,
    older_than: timedelta | None = None,
    batch_size: int = PURGE_BATCH,
    time_budget: float = TIME_BUDGET,
) -> int:
    """Delete job records created and last changed more than ``older_than`` ago (default:
    the retention setting), oldest first, in short transactions. Returns how many."""
    keep = older_than if older_than is not None else retention()
    if keep is None:
        return 0
    cutoff = timezone.now() - keep
    started = time.monotonic()
    deleted = 0
    while time.monotonic() - started < time_budget:
        with transaction.atomic():
            nonces = list(
                DiscordJob.objects.select_for_update(skip_locked=True)
                .filter(updated_at__lt=cutoff, created_at__lt=cutoff)
                .order_by("updated_at")
                .values_list("nonce", flat=True)[:batch_size]
            )
            if not nonces:
                break
            DiscordJob.objects.filter(pk__in=nonces).delete()
        deleted += len(nonces)
    if deleted:
        logger.info("discord job records purged", extra={"deleted": deleted})
    return deleted
