from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from apps.accounts.models import Organization
from apps.core.errors import NotFound

from .models import Balance, LedgerEntry, Price


@dataclass(frozen=True)
class BalanceView:
    available: int
    held: int


def balance_get(*, organization: Organization) -> BalanceView:
    row = Balance.objects.filter(organization=organization).values("available", "held").first()
    if row is None:
        return BalanceView(available=0, held=0)
    return BalanceView(available=row["available"], held=row["held"])


def price_get(*, action: str, mode: str) -> int:
    tokens = Price.objects.filter(action=action, mode=mode).values_list("tokens", flat=True).first()
    if tokens is None:
        raise NotFound(f"No price is configured for {action} in {mode} mode.")
    return int(tokens)


def price_list() -> QuerySet[Price]:
    return Price.objects.order_by("action", "mode")


def ledger_list(
    *, organization: Organization, kind: str | None = None, task_id: str | None = None
) -> QuerySet[LedgerEntry]:
    qs = LedgerEntry.objects.filter(organization=organization)
    if kind:
        qs = qs.filter(kind=kind)
    if task_id:
        qs = qs.filter(task_id=task_id)
    return qs.order_by("-id")
