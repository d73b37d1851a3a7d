"""Expired Idempotency-Key records are deleted by beat, whichever API key they belong to."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.models import IdempotencyRecord
from apps.core.tasks import purge_idempotency_records

pytestmark = pytest.mark.django_db


def test_expired_idempotency_records_are_purged(live_key, other_organization, make_key):
    now = timezone.now()
    theirs = make_key(other_organization)

    def record(api_key: object, key: str, expires_in: timedelta) -> IdempotencyRecord:
        return IdempotencyRecord.objects.create(
            api_key=api_key,
            key=key,
            fingerprint="f" * 64,
            state=IdempotencyRecord.COMPLETED,
            locked_at=now,
            expires_at=now + expires_in,
        )

    record(live_key.api_key, "expired", -timedelta(seconds=1))
    record(theirs.api_key, "expired-too", -timedelta(hours=30))
    kept = record(live_key.api_key, "fresh", timedelta(hours=23))
    purge_idempotency_records.run()
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [kept.pk]
