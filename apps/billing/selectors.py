from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet

from apps.accounts.models import Organization
from apps.core.cache import config_cached, config_changed
from apps.core.errors import NotFound
from apps.tasks.enums import UNFINISHED_STATUSES, Mode
from apps.tasks.models import Task

from .models import PRICES_CACHE, Balance, EntryKind, LedgerEntry, Price, TokenPackage


@dataclass(frozen=True)
class BalanceView:
    available: int
    held: int


def balance_get(*, organization: Organization) -> BalanceView:
    row = Balance.objects.filter(organization=organization).values("available", "held").first()
    if row is None:
        return BalanceView(available=0, held=0)
    return BalanceView(available=row["available"], held=row["held"])


def own_account_fee_of(tokens: int, own_account_tokens: int | None) -> int:
    """A price row's platform fee for a task the organization's own account runs: the
    operator's figure, else the default share of the price (rounded up)."""
    if own_account_tokens is not None:
        return int(own_account_tokens)
    percent = int(settings.OWN_ACCOUNT_FEE_PERCENT)
    return -(-int(tokens) * percent // 100)


def _prices_load() -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (action, mode): (int(tokens), own_account_fee_of(tokens, own))
        for action, mode, tokens, own in Price.objects.values_list(
            "action", "mode", "tokens", "own_account_tokens"
        )
    }


def _price_row(action: str, mode: str) -> tuple[int, int]:
    row = config_cached(PRICES_CACHE, _prices_load).get((action, mode))
    if row is None:
        raise NotFound(f"No price is configured for {action} in {mode} mode.")
    return row


def price_get(*, action: str, mode: str) -> int:
    """The price of ``action`` in ``mode``, from the process's copy of the price table
    (``apps.core.cache``): an operator's change reaches every process within a second."""
    return _price_row(action, mode)[0]


def own_account_fee_get(*, action: str, mode: str) -> int:
    """The platform fee of ``action`` in ``mode`` when the organization's own upstream account
    runs it (the fee table beside the prices; same cache)."""
    return _price_row(action, mode)[1]


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


def task_refunds_since(
    *, since: datetime, organization: Organization | None = None
) -> dict[str, int]:
    """Tokens given back by task refunds (``ledger_refund_task``: a positive ``refund`` entry
    linked to its task) made at or after ``since``, by task id: what spend figures take off the
    captures they count (a refund always comes after its capture). An operator's action, so
    few rows; read by the ledger's time index."""
    refunds = LedgerEntry.objects.filter(
        kind=EntryKind.REFUND, task__isnull=False, delta_available__gt=0, created_at__gte=since
    )
    if organization is not None:
        refunds = refunds.filter(organization=organization)
    refunded: dict[str, int] = {}
    for task_id, amount in refunds.values_list("task_id", "delta_available"):
        refunded[str(task_id)] = refunded.get(str(task_id), 0) + int(amount)
    return refunded


@dataclass(frozen=True)
class PriceTable:
    modes: list[str]
    #: action -> mode -> tokens per successful task
    prices: dict[str, dict[str, int]]
    #: action -> mode -> platform fee per successful task run by the organization's own account
    own_account_fees: dict[str, dict[str, int]]
    #: whether the organization's tier lets it add its own upstream accounts
    own_accounts_allowed: bool
    #: the modes the organization's tier may use
    allowed_modes: list[str]
    tokens_per_cny: int


def price_table_get(*, organization: Organization) -> PriceTable:
    """The price table as the organization sees it, with the modes its tier allows."""
    table: dict[str, dict[str, int]] = {}
    fees: dict[str, dict[str, int]] = {}
    for action, mode, tokens, own in price_list().values_list(
        "action", "mode", "tokens", "own_account_tokens"
    ):
        table.setdefault(action, {})[mode] = int(tokens)
        fees.setdefault(action, {})[mode] = own_account_fee_of(tokens, own)
    tier = organization.tier
    return PriceTable(
        modes=list(Mode.values),
        prices=table,
        own_account_fees=fees,
        own_accounts_allowed=tier.allows_own_accounts,
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
