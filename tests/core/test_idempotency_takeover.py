"""An Idempotency-Key taken over by a retry after its first request outlived the lock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.models import IdempotencyRecord

pytestmark = pytest.mark.django_db


def test_a_request_that_outlived_its_lock_leaves_the_retry_that_took_over_alone(live_key):
    """Request A holds the key past ``IN_FLIGHT_LOCK`` (its process hung); retry B takes the
    key over and runs. When A ends after all, neither its answer nor its release (a 5xx) may
    touch B's record: B's answer is the one stored, and the key stays held while B runs."""
    from apps.core.idempotency import (
        IN_FLIGHT_LOCK,
        idempotency_begin,
        idempotency_complete,
        idempotency_release,
    )

    a = idempotency_begin(api_key=live_key.api_key, key="k-1", fingerprint="f")
    IdempotencyRecord.objects.filter(pk=a.pk).update(
        locked_at=timezone.now() - IN_FLIGHT_LOCK - timedelta(seconds=1)
    )
    a.refresh_from_db()
    b = idempotency_begin(api_key=live_key.api_key, key="k-1", fingerprint="f")
    assert b.pk == a.pk and b.locked_at != a.locked_at  # taken over

    idempotency_release(record=a)  # A's 5xx: the key must stay B's
    assert IdempotencyRecord.objects.filter(pk=b.pk, state=IdempotencyRecord.IN_FLIGHT).exists()
    idempotency_complete(record=a, status=200, body=b'{"a": 1}', content_type="application/json")
    assert IdempotencyRecord.objects.get(pk=b.pk).state == IdempotencyRecord.IN_FLIGHT

    idempotency_complete(record=b, status=200, body=b'{"b": 2}', content_type="application/json")
    stored = idempotency_begin(api_key=live_key.api_key, key="k-1", fingerprint="f")
    assert stored.body == b'{"b": 2}'
