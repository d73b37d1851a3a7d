"""Reads: the public status of each mode, and the conditions operators are alerted on.

Every query is bounded by an index (the queue index for the oldest queued task, the
``finished_at`` and ``created_at`` indexes for the last 15 minutes), so the status page costs
the same with a million tasks as with ten.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Min, Q

from apps.core.ratelimit import cache_breaker
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import upstream_account_modes
from apps.tasks.enums import Mode, Pool, Status
from apps.tasks.models import Task
from apps.webhooks.models import WebhookEndpoint

from .models import AlertSettings

WINDOW = timedelta(minutes=15)
#: A task started in the window was created at most this long before it (the queue timeout).
MAX_QUEUE_AGE = timedelta(hours=6)
#: The wait samples read for the median; the newest starts are the ones that matter.
MAX_WAIT_SAMPLES = 2000

OPERATIONAL, DEGRADED, DOWN = "operational", "degraded", "down"


def alert_settings() -> AlertSettings:
    return AlertSettings.objects.get_or_create(pk=1)[0]


@dataclass(frozen=True)
class ModeStatus:
    mode: str
    state: str
    #: Queued (not yet started) tasks of paying customers.
    queue_depth: int
    #: Median seconds from acceptance to start over the last 15 minutes; None when none started.
    median_wait_seconds: float | None
    #: Seconds the oldest queued task has waited; 0 with an empty queue.
    oldest_wait_seconds: float
    accounts_usable: int
    accounts_total: int
    #: Finished in the last 15 minutes: succeeded and failed (cancelled ones are not counted).
    succeeded: int
    failed: int
    reasons: tuple[str, ...]

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return None if finished == 0 else self.succeeded / finished


#: The platform's tasks: an own-only task waits for, and runs on, its organization's own
#: accounts alone, so its queue, wait and outcome say nothing about the shared pool.
_PLATFORM_TASKS = ~Q(pool=Pool.OWN)
#: ... and a task an organization's own account ran (an ``own_then_shared`` one) neither.
_RUN_ON_PLATFORM = Q(upstream_account__isnull=True) | Q(upstream_account__owner__isnull=True)


def _accounts_by_mode(now: datetime) -> dict[str, tuple[int, int]]:
    counts = {mode: [0, 0] for mode in Mode.values}
    # The shared pool only: an organization's own accounts serve nobody else.
    for account in UpstreamAccount.objects.filter(is_sandbox_pool=False, owner=None).only(
        "engine", "options", "modes", "is_enabled", "health", "cooldown_until"
    ):
        # Per mode: an account out of fast hours still takes RELAX work, but no FAST (unless
        # it falls back to relax) and no TURBO work.
        takes = upstream_account_modes(account, now=now)
        for mode in account.modes or []:
            if mode in counts:
                counts[mode][1] += 1
                counts[mode][0] += int(mode in takes)
    return {mode: (usable, total) for mode, (usable, total) in counts.items()}


def _median_waits(now: datetime) -> dict[str, float | None]:
    rows = (
        Task.objects.filter(
            _PLATFORM_TASKS,
            _RUN_ON_PLATFORM,
            is_test=False,
            created_at__gte=now - WINDOW - MAX_QUEUE_AGE,
            started_at__gte=now - WINDOW,
            submitted_at__isnull=False,
        )
        .order_by("-created_at")
        .values_list("mode", "submitted_at", "started_at")[:MAX_WAIT_SAMPLES]
    )
    samples: dict[str, list[float]] = {mode: [] for mode in Mode.values}
    for mode, submitted, started in rows:
        if mode in samples and started is not None and submitted is not None:
            samples[mode].append(max((started - submitted).total_seconds(), 0.0))
    return {mode: (statistics.median(v) if v else None) for mode, v in samples.items()}


def _queues(now: datetime) -> dict[str, tuple[int, float]]:
    rows = (
        Task.objects.filter(_PLATFORM_TASKS, status=Status.NOT_START, is_test=False)
        .values("mode")
        .annotate(depth=Count("id"), oldest=Min("submitted_at"))
    )
    found = {
        row["mode"]: (
            row["depth"],
            max((now - row["oldest"]).total_seconds(), 0.0) if row["oldest"] else 0.0,
        )
        for row in rows
    }
    return {mode: found.get(mode, (0, 0.0)) for mode in Mode.values}


def _finished(now: datetime) -> dict[str, tuple[int, int]]:
    rows = (
        Task.objects.filter(
            _PLATFORM_TASKS, _RUN_ON_PLATFORM, finished_at__gte=now - WINDOW, is_test=False
        )
        .values("mode")
        .annotate(
            succeeded=Count("id", filter=Q(status=Status.SUCCESS)),
            failed=Count("id", filter=Q(status=Status.FAILURE)),
        )
    )
    found = {row["mode"]: (row["succeeded"], row["failed"]) for row in rows}
    return {mode: found.get(mode, (0, 0)) for mode in Mode.values}


def modes_status(*, now: datetime, settings: AlertSettings | None = None) -> list[ModeStatus]:
    """Each mode's state, from the accounts serving it and the last 15 minutes of tasks.

    Down: no account can take work. Degraded: some serving accounts cannot, the oldest queued
    task waited past the operator's threshold, or fewer tasks succeed than the threshold.
    """
    settings = settings or alert_settings()
    accounts = _accounts_by_mode(now)
    waits = _median_waits(now)
    queues = _queues(now)
    finished = _finished(now)
    result = []
    for mode in Mode.values:
        usable, total = accounts[mode]
        depth, oldest = queues[mode]
        succeeded, failed = finished[mode]
        reasons = []
        if usable == 0:
            reasons.append("no upstream account can take work")
        elif usable < total:
            reasons.append(f"{total - usable} of {total} upstream accounts unavailable")
        if oldest > settings.queue_wait_minutes * 60:
            reasons.append(f"the oldest queued task has waited {int(oldest // 60)} min")
        if succeeded + failed >= settings.success_rate_min_tasks and (
            succeeded * 100 < settings.success_rate_percent * (succeeded + failed)
        ):
            reasons.append(f"{succeeded} of {succeeded + failed} tasks succeeded in 15 min")
        state = DOWN if usable == 0 else DEGRADED if reasons else OPERATIONAL
        result.append(
            ModeStatus(
                mode=mode,
                state=state,
                queue_depth=depth,
                median_wait_seconds=waits[mode],
                oldest_wait_seconds=oldest,
                accounts_usable=usable,
                accounts_total=total,
                succeeded=succeeded,
                failed=failed,
                reasons=tuple(reasons),
            )
        )
    return result


@dataclass(frozen=True)
class Condition:
    """Something operators should hear about, while it lasts. ``key`` identifies it."""

    key: str
    kind: str
    title: str
    detail: str
    #: False where the event itself already e-mailed operators at once (an account's health
    #: change: ``apps/engines/notify.py``); the alert then adds the webhook message and the
    #: "resolved" e-mail, and never mails the opening twice.
    email_on_open: bool = True


def unhealthy_accounts() -> list[Condition]:
    """Accounts out of the healthy state, enabled or taken out by their engine. A cooldown is
    left out: it ends by itself within minutes (the engine layer mails it at most hourly), and
    a mode left without any account still alerts as ``mode_down``."""
    # Organizations' own accounts are their owners' to fix (shown on their dashboard).
    rows = UpstreamAccount.objects.filter(is_sandbox_pool=False, owner=None).exclude(
        health__in=(Health.HEALTHY, Health.COOLING_DOWN)
    )
    return [
        Condition(
            key=f"account:{account.pk}",
            kind="account_unhealthy",
            title=f"Upstream account {account.name} is {account.get_health_display().lower()}",
            detail=account.health_reason or account.last_error or "no reason recorded",
            email_on_open=False,
        )
        for account in rows.order_by("pk")
    ]


def mode_conditions(statuses: list[ModeStatus], settings: AlertSettings) -> list[Condition]:
    found = []
    for status in statuses:
        if status.accounts_total and status.accounts_usable == 0:
            found.append(
                Condition(
                    key=f"mode_down:{status.mode}",
                    kind="mode_down",
                    title=f"{status.mode} has no healthy upstream account",
                    detail=f"{status.accounts_total} account(s) serve {status.mode}; none can "
                    f"take work. {status.queue_depth} task(s) queued.",
                )
            )
        if status.oldest_wait_seconds > settings.queue_wait_minutes * 60:
            found.append(
                Condition(
                    key=f"queue_wait:{status.mode}",
                    kind="queue_wait",
                    title=f"{status.mode} queue wait above {settings.queue_wait_minutes} min",
                    detail=f"The oldest queued task has waited "
                    f"{int(status.oldest_wait_seconds // 60)} min; {status.queue_depth} queued.",
                )
            )
        finished = status.succeeded + status.failed
        if finished >= settings.success_rate_min_tasks and (
            status.succeeded * 100 < settings.success_rate_percent * finished
        ):
            found.append(
                Condition(
                    key=f"success_rate:{status.mode}",
                    kind="success_rate",
                    title=f"{status.mode} success rate below {settings.success_rate_percent} %",
                    detail=f"{status.succeeded} of {finished} tasks succeeded in the last 15 min.",
                )
            )
    return found


def webhook_conditions(*, now: datetime, settings: AlertSettings) -> list[Condition]:
    disabled = WebhookEndpoint.objects.filter(disabled_at__gte=now - timedelta(hours=1)).count()
    if disabled < settings.webhooks_disabled_count:
        return []
    return [
        Condition(
            key="webhooks_disabled",
            kind="webhooks_disabled",
            title=f"{disabled} webhook endpoints disabled within an hour",
            detail="Receivers failing en masse often means our side (signing, network, DNS) "
            "broke rather than theirs. Check the delivery log.",
        )
    ]


def ledger_condition(settings: AlertSettings) -> list[Condition]:
    if not settings.ledger_drifts:
        return []
    return [
        Condition(
            key="ledger_drift",
            kind="ledger_drift",
            title=f"The token ledger has {settings.ledger_drifts} drift(s)",
            detail="Run `manage.py ledger_check` for the list; balances and entries disagree.",
        )
    ]


#: The public status is read by anyone, as often as they like: it is computed at most this often.
PUBLIC_STATUS_SECONDS = 10
_PUBLIC_STATUS_KEY = "monitoring:public-status:v1"


def public_status(*, now: datetime) -> dict[str, object]:
    """Each mode's state, queue depth and median wait — nothing about any tenant.

    Cached for ``PUBLIC_STATUS_SECONDS``; with the cache unreachable it is computed each time
    (the queries are bounded by indexes).
    """
    if not cache_breaker.is_open():
        try:
            cached = cache.get(_PUBLIC_STATUS_KEY)
        except Exception as exc:  # the cache is an optimisation only
            cache_breaker.trip(exc)
            cached = None
        if isinstance(cached, dict):
            return cached
    statuses = modes_status(now=now)
    states = {s.state for s in statuses}
    overall = DOWN if states == {DOWN} else DEGRADED if states - {OPERATIONAL} else OPERATIONAL
    body: dict[str, object] = {
        "status": overall,
        "updated_at": now.isoformat(),
        "window_minutes": int(WINDOW.total_seconds() // 60),
        "modes": [
            {
                "mode": s.mode,
                "status": s.state,
                "queue_depth": s.queue_depth,
                "median_wait_seconds": (
                    None if s.median_wait_seconds is None else round(s.median_wait_seconds, 1)
                ),
            }
            for s in statuses
        ],
    }
    if not cache_breaker.is_open():
        try:
            cache.set(_PUBLIC_STATUS_KEY, body, PUBLIC_STATUS_SECONDS)
        except Exception as exc:  # see above
            cache_breaker.trip(exc)
    return body
