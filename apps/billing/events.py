"""Where balance changes leave the billing domain: webhook outbox rows, same transaction.

The webhook outbox is a leaf like the ledger: billing calls it with plain values and it never
imports billing back.
"""

from __future__ import annotations

from django.conf import settings

from apps.accounts.models import Organization
from apps.webhooks.services import balance_low_publish


def balance_low_threshold() -> int:
    """Tokens under which the available balance is low (0: never)."""
    return int(getattr(settings, "BALANCE_LOW_THRESHOLD", 0))


def balance_changed(*, organization_id: int, before: int, available: int, held: int) -> None:
    """Publish ``balance.low`` when a movement takes the available balance below the threshold.

    Only the crossing publishes, not every movement below it, so a customer's endpoint hears
    once per dip rather than once per task. Called inside the ledger's transaction.
    """
    threshold = balance_low_threshold()
    if threshold <= 0 or not (before >= threshold > available):
        return
    organization = Organization.objects.get(pk=organization_id)
    balance_low_publish(
        organization=organization, available=available, held=held, threshold=threshold
    )
