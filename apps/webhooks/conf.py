"""Webhook tunables, read from settings with the documented defaults (SPEC §7)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from apps.core.http import Timeout

#: Delay before attempts 2, 3, …: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then dead.
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)


def retry_schedule() -> tuple[int, ...]:
    return tuple(getattr(settings, "WEBHOOK_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE))


def disable_after() -> timedelta:
    """An endpoint failing continuously this long is disabled and its owners are told."""
    return timedelta(days=float(getattr(settings, "WEBHOOK_DISABLE_AFTER_DAYS", 5)))


def rotation_overlap() -> timedelta:
    """How long the previous secret keeps signing after a rotation."""
    return timedelta(hours=float(getattr(settings, "WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS", 24)))


def retention() -> timedelta | None:
    """How long finished messages and their attempt log are kept; None keeps them forever."""
    days = float(getattr(settings, "WEBHOOK_RETENTION_DAYS", 30))
    return timedelta(days=days) if days > 0 else None


def request_timeout() -> Timeout:
    return Timeout(
        connect=float(getattr(settings, "WEBHOOK_CONNECT_TIMEOUT", 5.0)),
        read=float(getattr(settings, "WEBHOOK_READ_TIMEOUT", 10.0)),
        total=float(getattr(settings, "WEBHOOK_TOTAL_TIMEOUT", 15.0)),
    )


#: The beat task re-queues an attempt no sooner than this after queueing it (or after the
#: publishing transaction queued it), so a lost broker message costs at most this much delay.
DISPATCH_LEASE = timedelta(seconds=60)
#: A worker's claim on an attempt. Far longer than one request (total timeout 15 s), so only a
#: dead worker's claim ever expires.
CLAIM_LEASE = timedelta(seconds=120)
#: Retries due sooner than this are also queued with a countdown rather than waiting for beat.
SHORT_RETRY = timedelta(seconds=60)
#: Bytes of the receiver's response kept in the attempt log.
RESPONSE_LOG_BYTES = 2048
#: A delivery task stops taking new work after this many seconds (Celery's soft limit is 60 s);
#: whatever is left is picked up by the beat task.
WORKER_TIME_BUDGET = 40.0
#: Finished messages deleted per transaction by the retention purge.
PURGE_BATCH = 1000

#: Celery task names of the entry points in ``apps.webhooks.workers``. Services send them by
#: name through ``apps.core.messaging``, so nothing here imports the Celery module.
DELIVER_TASK = "webhooks.deliver"
DELIVER_DUE_TASK = "webhooks.deliver_due"
PURGE_TASK = "webhooks.purge"
