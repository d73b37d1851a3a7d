"""Reads of an organization's own upstream accounts (bring your own accounts, issue #18).

Every read takes ``organization=``: another organization's account, or a shared one, is
exactly as missing as one that does not exist (tenancy fails closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.errors import NotFound
from apps.tasks.enums import Pool, Status
from apps.tasks.models import Task

from .models import UpstreamAccount
from .selectors import upstream_account_modes

#: A job holds its account's slot in these states (until the upstream finished it).
_RUNNING = Q(tasks__status__in=(Status.SUBMITTED, Status.IN_PROGRESS), tasks__slot_freed_at=None)


def own_account_queryset(*, organization: Organization) -> QuerySet[UpstreamAccount]:
    """The organization's own accounts with their load (``running``: jobs holding a slot)."""
    return (
        UpstreamAccount.objects.filter(owner=organization)
        .annotate(running=Count("tasks", filter=_RUNNING))
        .order_by("name", "pk")
    )


def own_account_list(*, organization: Organization) -> list[UpstreamAccount]:
    return list(own_account_queryset(organization=organization))


def own_account_get(*, organization: Organization, account_id: object) -> UpstreamAccount:
    """One own account of the organization; ``NotFound`` for anything else (another
    organization's, a shared one, a malformed id)."""
    try:
        pk = int(str(account_id))
    except (TypeError, ValueError):
        raise NotFound("No such upstream account.") from None
    account = own_account_queryset(organization=organization).filter(pk=pk).first()
    if account is None:
        raise NotFound("No such upstream account.")
    return account


def own_account_count(*, organization: Organization) -> int:
    return UpstreamAccount.objects.filter(owner=organization).count()


@dataclass(frozen=True)
class OwnAccountState:
    """What the tenant sees of an own account's condition."""

    #: The modes new work may go to it for now (empty: it takes nothing at the moment).
    serving: list[str]
    running: int
    slots: int
    queued: int


def own_account_state(
    account: UpstreamAccount, *, now: datetime | None = None, queued: int = 0
) -> OwnAccountState:
    running = int(getattr(account, "running", 0) or 0)
    return OwnAccountState(
        serving=upstream_account_modes(account, now=now or timezone.now()),
        running=running,
        slots=account.concurrency,
        queued=queued,
    )


def own_queue_counts(*, organization: Organization) -> dict[str, int]:
    """The organization's queued tasks that only its own accounts may run, by mode."""
    rows = (
        Task.objects.filter(
            organization=organization, status=Status.NOT_START, pool=Pool.OWN, is_test=False
        )
        .values_list("mode")
        .annotate(n=Count("pk"))
    )
    return {mode: int(n) for mode, n in rows}


def own_modes_served(*, organization_id: int) -> set[str]:
    """The modes at least one of the organization's own accounts is set to serve, whether it
    is switched on or off and whatever its health (a disabled or cooling account may take work
    again; only a removed one, or one whose modes no longer include the mode, is gone).

    An ``own`` task of a mode outside this set can never run: the submit refuses it under the
    organization's lock, removing the last such account fails the queued ones
    (``own_services``), and the lifecycle fails an assigned one it would give back to the
    queue (``tasks.lifecycle._requeue``, under that lock too). Accounts are few per
    organization; their modes live in a JSON list, read here rather than searched (SQLite
    cannot)."""
    served: set[str] = set()
    for modes in UpstreamAccount.objects.filter(owner_id=organization_id).values_list(
        "modes", flat=True
    ):
        served.update(mode for mode in modes or [] if isinstance(mode, str))
    return served
