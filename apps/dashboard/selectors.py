"""Reads only the dashboard needs. Tenant data is always read for one organization."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.accounts.models import Invitation, Organization, hash_invitation_token
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import task_refunds_since
from apps.core.errors import NotFound
from apps.tasks.models import Task


@dataclass(frozen=True)
class DaySpend:
    day: date
    tokens: int


def spend_by_day(
    *, organization: Organization, days: int = 30, today: date | None = None
) -> list[DaySpend]:
    """Tokens captured (spent on successful tasks) per day, oldest first, zero days included;
    a task the operator refunded (``ledger_refund_task``) is taken off the day of its capture,
    so the chart shows what the tasks cost in the end."""
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    captures = LedgerEntry.objects.filter(
        organization=organization,
        kind=EntryKind.CAPTURE,
        created_at__date__gte=first,
        created_at__date__lte=today,
    ).annotate(day=TruncDate("created_at"))
    rows = captures.values("day").annotate(held=Sum("delta_held"))
    # A capture moves tokens out of "held": its delta_held is minus the tokens spent.
    spent = {row["day"]: -int(row["held"] or 0) for row in rows}
    since = timezone.make_aware(datetime.combine(first, time.min))
    refunded = task_refunds_since(since=since, organization=organization)
    if refunded:
        for task_id, day, held in captures.filter(task_id__in=list(refunded)).values_list(
            "task_id", "day", "delta_held"
        ):
            spent[day] -= min(refunded[str(task_id)], -int(held))
    return [
        DaySpend(day=first + timedelta(days=i), tokens=spent.get(first + timedelta(days=i), 0))
        for i in range(days)
    ]


def invitation_get_by_token(*, token: str) -> Invitation:
    """The invitation an e-mailed link points at (the token is the access, like a password)."""
    invitation = (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(token_hash=hash_invitation_token(token or ""))
        .first()
    )
    if invitation is None:
        raise NotFound("This invitation does not exist.")
    return invitation


def task_children(*, organization: Organization, task: Task) -> QuerySet[Task]:
    """Follow-ups made from ``task`` (U1, V2 …), newest first."""
    return Task.objects.filter(organization=organization, parent=task).order_by("-created_at")


def ledger_entries_of_tasks(
    *, organization: Organization, task_ids: list[str]
) -> dict[str, list[LedgerEntry]]:
    """Every ledger entry of each of ``task_ids`` (with its task), oldest first."""
    grouped: dict[str, list[LedgerEntry]] = {}
    if not task_ids:
        return grouped
    entries = (
        LedgerEntry.objects.filter(organization=organization, task_id__in=task_ids)
        .select_related("task")
        .order_by("id")
    )
    for entry in entries:
        grouped.setdefault(str(entry.task_id), []).append(entry)
    return grouped
