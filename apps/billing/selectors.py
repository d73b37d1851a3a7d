from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from apps.accounts.models import Organization
from apps.core.cache import config_cached, config_changed
from apps.core.errors import NotFound
from apps.tasks.enums import UNFINISHED_STATUSES, Mode
from apps.tasks.models import Task

from .models import PRICES_CACHE, Balance, LedgerEntry, Price, TokenPackage


@dataclass(frozen=True)
class BalanceView:
    available: int
    held: int


def balance_get(*, organization: Organization) -> BalanceView:
    row = Balance.objects.filter(organization=organization).values("available", "held").first()
    if row is None:
        return BalanceView(available=0, held=0)
    return BalanceView(available=row["available"], held=row["held"])


def _prices_load() -> dict[tuple[str, str], int]:
    return {
        (action, mode): int(tokens)
        for action, mode, tokens in Price.objects.values_list("action", "mode", "tokens")
    }


def price_get(*, action: str, mode: str) -> int:
    """The price of ``action`` in ``mode``, from the process's copy of the price table
    (``apps.core.cache``): an operator's change reaches every process within a second."""
    tokens = config_cached(PRICES_CACHE, _prices_load).get((action, mode))
    if tokens is None:
        raise NotFound(f"No price is configured for {action} in {mode} mode.")
    return int(tokens)


def prices_changed(**_: object) -> None:
    """Receiver of Price's save and delete signals (connected in ``BillingConfig.ready``)."""
    config_changed(PRICES_CACHE)


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


@dataclass(frozen=True)
class PriceTable:
    modes: list[str]
    #: action -> mode -> tokens per successful task
    prices: dict[str, dict[str, int]]
    #: the modes the organization's tier may use
    allowed_modes: list[str]
    tokens_per_cny: int


def price_table_get(*, organization: Organization) -> PriceTable:
    """The price table as the organization sees it, with the modes its tier allows."""
    table: dict[str, dict[str, int]] = {}
    for action, mode, tokens in price_list().values_list("action", "mode", "tokens"):
        table.setdefault(action, {})[mode] = int(tokens)
    tier = organization.tier
    return PriceTable(
        modes=list(Mode.values),
        prices=table,
        allowed_modes=[mode for mode in Mode.values if tier.allows_mode(mode)],
        tokens_per_cny=int(settings.TOKENS_PER_CNY),
    )


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    max_unfinished_tasks: int
    allowed_modes: list[str]
    unfinished_tasks: int


def plan_get(*, organization: Organization) -> Plan:
    tier = organization.tier
    unfinished = Task.objects.filter(
        organization=organization, status__in=UNFINISHED_STATUSES
    ).count()
    return Plan(
        code=tier.code,
        name=tier.name,
        max_unfinished_tasks=tier.max_unfinished_tasks,
        allowed_modes=[mode for mode in Mode.values if tier.allows_mode(mode)],
        unfinished_tasks=unfinished,
    )


def package_list_active() -> QuerySet[TokenPackage]:
    return TokenPackage.objects.filter(is_active=True).order_by("sort_order", "tokens", "id")
