"""Reads for the operator stats page (SPEC §10).

Every number is one aggregate query over an indexed range — the last hour of ``created_at`` or
``finished_at``, the queue index ``(status, mode, submitted_at)``, the running index
``(upstream_account, status)``, 30 days of capture entries (less the operator's task refunds
of them, few rows by the ledger's time index) — so the page costs the same with
a hundred tasks or ten million. Live business figures leave out test-key tasks (they run on the
sandbox pool and move no money); account utilisation includes the sandbox pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, F, Min, Q, Sum
from django.db.models.functions import TruncDate, TruncMinute
from django.utils import timezone

from apps.accounts.models import Organization
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import task_refunds_since
from apps.engines.models import UpstreamAccount
from apps.engines.selectors import upstream_account_modes, upstream_account_usable
from apps.tasks.enums import Mode, Status
from apps.tasks.models import Task

RUNNING_STATUSES = (Status.SUBMITTED, Status.IN_PROGRESS)


@dataclass(frozen=True)
class MinuteBucket:
    minute: datetime
    created: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class SuccessRate:
    succeeded: int
    failed: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def percent(self) -> float | None:
        """Share of finished tasks that succeeded; cancels are the customer's choice, not ours."""
        return round(100 * self.succeeded / self.finished, 1) if self.finished else None


@dataclass(frozen=True)
class ModeQueue:
    mode: str
    queued: int
    oldest_wait_seconds: float | None
    avg_wait_seconds: float | None
    started_last_hour: int
    running: int
    capacity: int
    success: SuccessRate


@dataclass(frozen=True)
class AccountLoad:
    id: int
    name: str
    engine: str
    modes: list[str]
    is_enabled: bool
    is_sandbox_pool: bool
    usable: bool
    health: str
    running: int
    concurrency: int
    #: The modes it takes new work for now (None: all its modes while usable).
    takes: tuple[str, ...] | None = field(default=None, compare=False)

    @property
    def utilisation(self) -> float:
        return round(100 * self.running / self.concurrency, 1) if self.concurrency else 0.0


@dataclass(frozen=True)
class DayTokens:
    day: date
    tokens: int
    tasks: int


@dataclass(frozen=True)
class TenantTotal:
    organization_id: int
    name: str
    tokens: int
    tasks: int


@dataclass(frozen=True)
class StatsOverview:
    now: datetime
    per_minute: list[MinuteBucket]
    success_hour: SuccessRate
    success_day: SuccessRate
    modes: list[ModeQueue]
    accounts: list[AccountLoad]
    tokens_per_day: list[DayTokens]
    top_tenants: list[TenantTotal]

    @property
    def tokens_30_days(self) -> int:
        return sum(day.tokens for day in self.tokens_per_day)

    @property
    def tasks_last_hour(self) -> int:
        return sum(bucket.created for bucket in self.per_minute)


def _live() -> Any:
    return Task.objects.filter(is_test=False)


def stats_tasks_per_minute(*, now: datetime, minutes: int = 60) -> list[MinuteBucket]:
    """Tasks created, succeeded and failed in each of the last ``minutes`` whole minutes."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    created = dict(
        _live()
        .filter(created_at__gte=start, created_at__lt=end)
        .annotate(minute=TruncMinute("created_at"))
        .values_list("minute")
        .annotate(n=Count("pk"))
        .values_list("minute", "n")
    )
    finished: dict[tuple[datetime, str], int] = {
        (minute, status): n
        for minute, status, n in _live()
        .filter(
            finished_at__gte=start,
            finished_at__lt=end,
            status__in=(Status.SUCCESS, Status.FAILURE),
        )
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute", "status")
        .annotate(n=Count("pk"))
        .values_list("minute", "status", "n")
    }
    buckets = []
    for offset in range(minutes):
        minute = start + timedelta(minutes=offset)
        buckets.append(
            MinuteBucket(
                minute=minute,
                created=created.get(minute, 0),
                succeeded=finished.get((minute, Status.SUCCESS), 0),
                failed=finished.get((minute, Status.FAILURE), 0),
            )
        )
    return buckets


def stats_success_rate(*, since: datetime, mode: str | None = None) -> SuccessRate:
    qs = _live().filter(finished_at__gte=since, status__in=(Status.SUCCESS, Status.FAILURE))
    if mode is not None:
        qs = qs.filter(mode=mode)
    counts = qs.aggregate(
        succeeded=Count("pk", filter=Q(status=Status.SUCCESS)),
        failed=Count("pk", filter=Q(status=Status.FAILURE)),
    )
    return SuccessRate(succeeded=counts["succeeded"] or 0, failed=counts["failed"] or 0)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return round(value.total_seconds(), 1)
    # SQLite hands back microseconds for a duration aggregate.
    return round(float(value) / 1_000_000, 1)


def stats_account_loads(*, now: datetime) -> list[AccountLoad]:
    """Every account with its running jobs (assigned or in progress) against its concurrency."""
    running = dict(
        Task.objects.filter(status__in=RUNNING_STATUSES, upstream_account__isnull=False)
        .values_list("upstream_account")
        .annotate(n=Count("pk"))
        .values_list("upstream_account", "n")
    )
    return [
        AccountLoad(
            id=account.pk,
            name=account.name,
            engine=account.engine,
            modes=list(account.modes or []),
            is_enabled=account.is_enabled,
            is_sandbox_pool=account.is_sandbox_pool,
            usable=upstream_account_usable(account, now=now),
            health=account.health,
            running=running.get(account.pk, 0),
            concurrency=account.concurrency,
            takes=tuple(upstream_account_modes(account, now=now)),
        )
        for account in UpstreamAccount.objects.order_by("name")
    ]


def stats_mode_queues(*, now: datetime, accounts: list[AccountLoad]) -> list[ModeQueue]:
    """Per mode: queued tasks, the oldest wait, the average wait of tasks started in the last
    hour, running jobs against the capacity of the usable live accounts, and the success rate."""
    hour_ago = now - timedelta(hours=1)
    queued = {
        row["mode"]: row
        for row in _live()
        .filter(status=Status.NOT_START)
        .values("mode")
        .annotate(n=Count("pk"), oldest=Min("submitted_at"))
    }
    waits = {
        row["mode"]: row
        for row in _live()
        # The created_at bound keeps this on the index: a task starts within its start
        # deadline of being accepted, or not at all.
        .filter(
            created_at__gte=hour_ago - settings.TASK_START_DEADLINE - timedelta(minutes=1),
            started_at__gte=hour_ago,
        )
        .values("mode")
        .annotate(n=Count("pk"), wait=Avg(F("started_at") - F("submitted_at")))
    }
    running = dict(
        _live()
        .filter(status__in=RUNNING_STATUSES)
        .values_list("mode")
        .annotate(n=Count("pk"))
        .values_list("mode", "n")
    )
    finished = {
        (mode, status): n
        for mode, status, n in _live()
        .filter(finished_at__gte=hour_ago, status__in=(Status.SUCCESS, Status.FAILURE))
        .values_list("mode", "status")
        .annotate(n=Count("pk"))
        .values_list("mode", "status", "n")
    }
    modes = []
    for mode in Mode.values:
        row = queued.get(mode) or {}
        oldest = row.get("oldest")
        wait = waits.get(mode) or {}
        capacity = sum(
            a.concurrency
            for a in accounts
            if a.usable
            and mode in (a.modes if a.takes is None else a.takes)
            and not a.is_sandbox_pool
        )
        modes.append(
            ModeQueue(
                mode=mode,
                queued=int(row.get("n") or 0),
                oldest_wait_seconds=round((now - oldest).total_seconds(), 1) if oldest else None,
                avg_wait_seconds=_seconds(wait.get("wait")),
                started_last_hour=int(wait.get("n") or 0),
                running=running.get(mode, 0),
                capacity=capacity,
                success=SuccessRate(
                    succeeded=finished.get((mode, Status.SUCCESS), 0),
                    failed=finished.get((mode, Status.FAILURE), 0),
                ),
            )
        )
    return modes


def stats_tokens_per_day(*, now: datetime, days: int = 30) -> list[DayTokens]:
    """Tokens captured (successful live tasks charged) per UTC day, oldest first. A task the
    operator refunded (``ledger_refund_task``) is taken off the day of its capture: its tokens,
    and the task itself once all it paid was given back."""
    today = now.date()
    start_day = today - timedelta(days=days - 1)
    start = datetime.combine(start_day, datetime.min.time(), tzinfo=now.tzinfo)
    captures = LedgerEntry.objects.filter(kind=EntryKind.CAPTURE, created_at__gte=start).annotate(
        day=TruncDate("created_at")
    )
    rows: dict[date, dict[str, Any]] = {
        row["day"]: dict(row)
        for row in captures.values("day").annotate(tokens=Sum("delta_held"), n=Count("pk"))
    }
    # Refunds per capture day: (tokens given back, tasks refunded in full).
    refunds: dict[date, list[int]] = {}
    refunded = task_refunds_since(since=start)
    if refunded:
        for task_id, day, held in captures.filter(task_id__in=list(refunded)).values_list(
            "task_id", "day", "delta_held"
        ):
            back = min(refunded[str(task_id)], -int(held))
            of_day = refunds.setdefault(day, [0, 0])
            of_day[0] += back
            of_day[1] += int(back == -int(held))
    result = []
    for offset in range(days):
        day = start_day + timedelta(days=offset)
        row = rows.get(day) or {}
        back, whole = refunds.get(day, (0, 0))
        result.append(
            DayTokens(
                day=day,
                tokens=-int(row.get("tokens") or 0) - back,
                tasks=int(row.get("n") or 0) - whole,
            )
        )
    return result


def stats_top_tenants(*, now: datetime, days: int = 30, limit: int = 10) -> list[TenantTotal]:
    """The organizations that spent the most tokens (captures, less the operator's refunds of
    them) in the last ``days``."""
    since = now - timedelta(days=days)
    captures = LedgerEntry.objects.filter(kind=EntryKind.CAPTURE, created_at__gte=since)
    # Refunds per organization: (tokens given back, tasks refunded in full). A refund only
    # lowers a total, so the top ``limit`` after them is among the top ``limit`` plus one per
    # organization with a refund before them.
    refunds: dict[int, list[int]] = {}
    refunded = task_refunds_since(since=since)
    if refunded:
        for task_id, organization_id, held in captures.filter(
            task_id__in=list(refunded)
        ).values_list("task_id", "organization_id", "delta_held"):
            back = min(refunded[str(task_id)], -int(held))
            of_tenant = refunds.setdefault(organization_id, [0, 0])
            of_tenant[0] += back
            of_tenant[1] += int(back == -int(held))
    rows = list(
        captures.values("organization_id")
        .annotate(spent=Sum("delta_held"), n=Count("pk"))
        .order_by("spent", "organization_id")[: limit + len(refunds)]
    )
    totals = []
    for row in rows:
        back, whole = refunds.get(row["organization_id"], (0, 0))
        totals.append(
            (-int(row["spent"] or 0) - back, int(row["n"]) - whole, row["organization_id"])
        )
    totals.sort(key=lambda total: (-total[0], total[2]))
    totals = totals[:limit]
    names = dict(
        Organization.objects.filter(pk__in=[t[2] for t in totals]).values_list("pk", "name")
    )
    return [
        TenantTotal(
            organization_id=organization_id,
            name=names.get(organization_id, "?"),
            tokens=tokens,
            tasks=tasks,
        )
        for tokens, tasks, organization_id in totals
    ]


def stats_overview(*, now: datetime | None = None) -> StatsOverview:
    now = now or timezone.now()
    accounts = stats_account_loads(now=now)
    return StatsOverview(
        now=now,
        per_minute=stats_tasks_per_minute(now=now),
        success_hour=stats_success_rate(since=now - timedelta(hours=1)),
        success_day=stats_success_rate(since=now - timedelta(days=1)),
        modes=stats_mode_queues(now=now, accounts=accounts),
        accounts=accounts,
        tokens_per_day=stats_tokens_per_day(now=now),
        top_tenants=stats_top_tenants(now=now),
    )
