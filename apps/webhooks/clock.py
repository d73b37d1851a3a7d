"""The clock webhook scheduling reads. One indirection so tests can move time.

Only scheduling uses it (due times, retry back-off, failure streaks, leases). The
``webhook-timestamp`` header is always the real wall clock: receivers compare it with theirs to
reject replays, so it must never be a simulated time.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
