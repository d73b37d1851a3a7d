"""Durable scheduling: the queue is the Task table (SPEC §5).

``dispatch_pending`` hands queued tasks to accounts with free slots. It locks the accounts it
assigns to (``FOR UPDATE SKIP LOCKED``), so two dispatchers running at once never fill the same
slot twice, and it locks the queued rows it takes the same way, so no task is assigned twice.
Within the free slots it serves tenants fairly: the next task is always taken from the tenant
with the fewest tasks running, oldest first, so one tenant's backlog of 50 cannot starve
another's single task.

``tasks_sweep`` is the safety net run by beat: it fails tasks past their start deadline or run
timeout (releasing their holds), restarts poll chains whose worker died, and re-dispatches.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    F,
    IntegerField,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber
from django.utils import timezone

from apps.core.errors import Conflict
from apps.core.messaging import send_now
from apps.engines.base import engine_names, get_engine
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import upstream_account_modes, upstream_account_usable

from .enums import ErrorCode, Mode, Status
from .events import task_changed
from .lifecycle import (
    ACTIVE_STATUSES,
    DISPATCH,
    DISPATCH_RUNNING_TTL,
    INTERRUPTED_SUBMITS,
    SWEEP_MARK,
    dispatch_keys,
    dispatch_redis,
    engine_named,
    enqueue_poll,
    enqueue_start,
    poll_lease,
    start_lease,
    sweep_gap_threshold,
    task_fail,
    task_finish,
    task_poll,
    task_start,
    task_timeout,
)
from .models import SweepMark, Task

logger = logging.getLogger(__name__)

SANDBOX_POOL_NAME = "sandbox-pool"
#: Queued rows considered per dispatch round; fairness is exact within this window.
DISPATCH_WINDOW = 500
#: MODAL tasks nobody completed are cancelled after this long (they hold no money).
MODAL_EXPIRY = timedelta(days=1)


def _now() -> datetime:
    return timezone.now()


def sandbox_pool_ensure() -> UpstreamAccount:
    """The built-in pool that serves test keys. Needs no configuration (SPEC §2)."""
    account, _ = UpstreamAccount.objects.get_or_create(
        name=SANDBOX_POOL_NAME,
        defaults={
            "engine": "sandbox",
            "modes": [Mode.FAST, Mode.RELAX, Mode.TURBO],
            "concurrency": 10,
            "is_sandbox_pool": True,
            "options": {"duration": 5},
        },
    )
    return account


@dataclass
class _Slot:
    account: UpstreamAccount
    free: int
    running: int
    modes: list[str]  # the modes it takes now (its health may rule some out)


def _eligible(task: Task, slots: dict[int, _Slot]) -> list[_Slot]:
    candidates = [
        slot
        for slot in slots.values()
        if slot.free > 0
        and task.mode in slot.modes
        and slot.account.is_sandbox_pool == task.is_test
    ]
    parent = task.parent
    if parent is not None and parent.upstream_account_id:
        same = [s for s in candidates if s.account.pk == parent.upstream_account_id]
        if same:
            return same
        engine = engine_named(parent.engine or "sandbox")
        if engine is None or engine.follow_ups_need_parent_account:
            return []  # wait for the parent's account (the sweeper fails it if it is gone)
        candidates = [s for s in candidates if s.account.engine == parent.engine] or candidates
    return candidates


@dataclass(frozen=True)
class DispatchResult:
    """Ids assigned, and whether another dispatcher held some accounts at the time.

    A contended run may have missed a slot freed while the other dispatcher was working (it
    skipped the locked accounts, and the other one counted before the slot freed), so the
    Celery task runs once more shortly after instead of waiting for the beat safety net.
    """

    assigned: list[str]
    contended: bool = False
    #: Another process was running the dispatcher: this one left the pass to it.
    deferred: bool = False


def _queued_candidates(slots: dict[int, _Slot]) -> list[str]:
    """Ids of queued tasks worth considering now, interleaved across tenants.

    Only modes with a free slot are read (a backlog of RELAX tasks cannot hide the FAST ones),
    and each tenant contributes at most as many tasks as there are free slots, oldest first,
    ordered by their rank within the tenant: the window is fair however large one tenant's
    backlog is.
    """
    free = sum(slot.free for slot in slots.values() if slot.free > 0)
    live_modes = {
        mode
        for slot in slots.values()
        if slot.free > 0 and not slot.account.is_sandbox_pool
        for mode in slot.modes
    }
    test_modes = {
        mode
        for slot in slots.values()
        if slot.free > 0 and slot.account.is_sandbox_pool
        for mode in slot.modes
    }
    if connection.vendor == "postgresql":
        pools = sorted({(False, m) for m in live_modes} | {(True, m) for m in test_modes})
        return _queued_candidates_lateral(pools, free) if pools else []
    return _queued_candidates_window(live_modes, test_modes, free)


def _queued_candidates_window(live_modes: set[str], test_modes: set[str], free: int) -> list[str]:
    """The portable pick (SQLite, the embedded run): rank every servable queued row within its
    tenant. Correct anywhere; on PostgreSQL the LATERAL pick gives the same answer cheaply."""
    servable = Q(is_test=False, mode__in=live_modes) | Q(is_test=True, mode__in=test_modes)
    ranked = (
        Task.objects.filter(servable, status=Status.NOT_START)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("organization_id")],
                order_by=[F("submitted_at").asc(), F("pk").asc()],
            )
        )
        .filter(rank__lte=free)
        .order_by("rank", "submitted_at", "pk")
        .values_list("pk", flat=True)
    )
    return list(ranked[:DISPATCH_WINDOW])


def _queued_candidates_lateral(pools: list[tuple[bool, str]], free: int) -> list[str]:
    """``_queued_candidates`` on PostgreSQL, reading a handful of index entries whatever the
    queue length: the tenants with queued work by a skip scan of the partial index on queued
    rows (``task_queued_fair``), then for each tenant and servable pool its ``free`` oldest
    tasks (``LATERAL … LIMIT``), ranked within the tenant. The same answer as the portable
    window query, without reading and sorting every queued row."""
    sql, params = lateral_pick_sql(pools, free)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def lateral_pick_sql(pools: list[tuple[bool, str]], free: int) -> tuple[str, list[Any]]:
    """The SQL and parameters of the LATERAL pick (also for EXPLAIN in tests and benches)."""
    table = connection.ops.quote_name(Task._meta.db_table)
    queued = f"status = '{Status.NOT_START}'"  # a literal, so the partial index matches
    values = ", ".join(["(%s, %s)"] * len(pools))
    sql = f"""
        WITH RECURSIVE orgs(org) AS (
            (SELECT organization_id FROM {table} WHERE {queued}
             ORDER BY organization_id LIMIT 1)
            UNION ALL
            SELECT (SELECT t.organization_id FROM {table} t
                    WHERE t.{queued} AND t.organization_id > orgs.org
                    ORDER BY t.organization_id LIMIT 1)
            FROM orgs WHERE orgs.org IS NOT NULL
        ),
        pools(is_test, mode) AS (VALUES {values}),
        picked AS (
            SELECT c.id, c.submitted_at,
                   row_number() OVER (
                       PARTITION BY orgs.org ORDER BY c.submitted_at, c.id
                   ) AS rank
            FROM orgs CROSS JOIN pools
            CROSS JOIN LATERAL (
                SELECT t.id, t.submitted_at FROM {table} t
                WHERE t.{queued} AND t.organization_id = orgs.org
                  AND t.is_test = pools.is_test AND t.mode = pools.mode
                ORDER BY t.submitted_at, t.id LIMIT %s
            ) c
            WHERE orgs.org IS NOT NULL
        )
        SELECT id FROM picked WHERE rank <= %s
        ORDER BY rank, submitted_at, id LIMIT %s
    """  # noqa: S608 - table name and status literal are ours; values are parameters
    params: list[Any] = [v for pool in pools for v in pool]
    params += [free, free, DISPATCH_WINDOW]
    return sql, params


def dispatch_pending() -> DispatchResult:
    """Assign queued tasks to free account slots (least busy account first, fair to tenants)."""
    now = _now()
    if Task.objects.filter(status=Status.NOT_START, is_test=True).exists():
        sandbox_pool_ensure()
    with transaction.atomic():
        enabled = set(UpstreamAccount.objects.filter(is_enabled=True).values_list("pk", flat=True))
        locked = list(
            UpstreamAccount.objects.select_for_update(skip_locked=True)
            .filter(is_enabled=True)
            .order_by("pk")
        )
        contended = bool(enabled - {account.pk for account in locked})
        accounts = [account for account in locked if upstream_account_usable(account, now=now)]
        if not accounts:
            return DispatchResult([], contended)
        running = dict(
            Task.objects.filter(
                upstream_account__in=accounts, status__in=ACTIVE_STATUSES, slot_freed_at=None
            )
            .values_list("upstream_account")
            .annotate(n=Count("pk"))
            .values_list("upstream_account", "n")
        )
        slots = {
            a.pk: _Slot(
                a,
                a.concurrency - running.get(a.pk, 0),
                running.get(a.pk, 0),
                upstream_account_modes(a, now=now),
            )
            for a in accounts
        }
        if not any(slot.free > 0 for slot in slots.values()):
            return DispatchResult([], contended)
        candidates = _queued_candidates(slots)
        if not candidates:
            return DispatchResult([], contended)
        queued = list(
            Task.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("parent")
            .filter(pk__in=candidates, status=Status.NOT_START)
        )
        org_running: dict[int, int] = defaultdict(int)
        org_running.update(
            Task.objects.filter(
                organization_id__in={t.organization_id for t in queued},
                status__in=ACTIVE_STATUSES,
                slot_freed_at=None,
            )
            .values_list("organization_id")
            .annotate(n=Count("pk"))
            .values_list("organization_id", "n")
        )
        waiting = queued
        chosen_pairs: list[tuple[Task, UpstreamAccount]] = []
        while waiting and any(slot.free > 0 for slot in slots.values()):
            # Fairness: the tenant with the fewest running tasks goes next, oldest task first.
            waiting.sort(key=lambda t: (org_running[t.organization_id], t.submitted_at, t.pk))
            chosen = None
            for task in waiting:
                options = _eligible(task, slots)
                if options:
                    chosen = (task, min(options, key=lambda s: (s.running, s.account.pk)))
                    break
            if chosen is None:
                break
            task, slot = chosen
            waiting.remove(task)
            slot.free -= 1
            slot.running += 1
            org_running[task.organization_id] += 1
            chosen_pairs.append((task, slot.account))
        if not chosen_pairs:
            return DispatchResult([], contended)
        assigned = _assign(chosen_pairs, now)
    if assigned:
        logger.info("dispatched", extra={"count": len(assigned)})
    return DispatchResult(assigned, contended)


def _assign(pairs: list[tuple[Task, UpstreamAccount]], now: datetime) -> list[str]:
    """Write every assignment of a pass in one statement (the rows are locked by the caller,
    still NOT_START), then the events and start messages (sent after commit)."""
    account_of = [When(pk=task.pk, then=Value(account.pk)) for task, account in pairs]
    engine_of = [When(pk=task.pk, then=Value(account.engine)) for task, account in pairs]
    deadline_of = [
        When(pk=task.pk, then=Value(now + timedelta(seconds=account.run_timeout_seconds)))
        for task, account in pairs
    ]
    ids = [task.pk for task, _ in pairs]
    # The rows are locked (FOR UPDATE) as NOT_START by this transaction: every one moves.
    Task.objects.filter(pk__in=ids, status=Status.NOT_START).update(
        status=Status.SUBMITTED,
        upstream_account_id=Case(*account_of, output_field=IntegerField()),
        engine=Case(*engine_of, output_field=CharField()),
        submit_claimed_at=None,
        lease_expires_at=start_lease(now),
        run_deadline=Case(*deadline_of, output_field=DateTimeField()),
        updated_at=now,
    )
    assigned: list[str] = []
    for task, account in pairs:
        assigned.append(task.pk)
        task.status = Status.SUBMITTED
        task.upstream_account = account
        task_changed(task=task, event_type="task.updated")
        enqueue_start(task.pk)
    return assigned


#: Passes one coalesced run makes at most before it hands over to a fresh message.
MAX_COALESCED_PASSES = 50


def dispatch_run(*, took_message: bool = True) -> DispatchResult:
    """Run dispatch passes until nobody asks for another; the entry point of the dispatch
    message (``lifecycle.kick_dispatcher`` explains the flags).

    Only one process runs passes at a time: one that finds another running leaves the request
    to it and returns at once, so finished tasks no longer set off a crowd of passes that
    collide on the account locks. Without Redis (the embedded run) each message is one pass.
    ``took_message=False``: run without a dispatch message (a worker that just freed a slot);
    a message on its way stays marked as such.
    """
    client = dispatch_redis()
    if client is None:
        return dispatch_pending()
    queued, again, running = dispatch_keys()
    owner = secrets.token_hex(8)
    try:
        if took_message:
            client.delete(queued)  # from now on a kick sends a new message
        if not client.set(running, owner, nx=True, ex=DISPATCH_RUNNING_TTL):
            # The running one sees ``again`` before it stops.
            return DispatchResult([], deferred=True)
    except redis.RedisError:
        logger.warning("dispatch flags unreadable; one pass", exc_info=True)
        return dispatch_pending()
    assigned: list[str] = []
    contended = False
    try:
        for _ in range(MAX_COALESCED_PASSES):
            client.delete(again)
            result = dispatch_pending()
            assigned.extend(result.assigned)
            contended = result.contended
            if client.exists(again):
                client.expire(running, DISPATCH_RUNNING_TTL)
                continue
            if client.get(running) == owner.encode():
                client.delete(running)
            # A kick between our look at ``again`` and the release: its message's worker may
            # have found us still running and left, so take the request ourselves.
            if client.exists(again) and client.set(
                running, owner, nx=True, ex=DISPATCH_RUNNING_TTL
            ):
                continue
            return DispatchResult(assigned, contended)
        # Still asked for after many passes: let a new message carry on (no endless task).
        if client.get(running) == owner.encode():
            client.delete(running)
        return DispatchResult(assigned, contended=True)
    except redis.RedisError:
        logger.warning("dispatch flags lost mid-run", exc_info=True)
        return DispatchResult(assigned, contended=True)


#: Seconds before a dispatch that met another dispatcher's account locks runs again.
CONTENDED_DISPATCH_RETRY = 0.5


def poll_step(*, task_id: str, token: str) -> None:
    """The poll message's work: one poll step and, when it freed a slot, the hand-on.

    The process that freed the slot is free itself at that moment: it runs the dispatcher
    rather than send a message for another process to pick up, and submits the first task
    the pass assigned (that task's start message, also sent, then finds it claimed and does
    nothing), so the slot goes from freed to the next submit without a hop. When nothing was
    waiting for the slot, it also makes and stores the result here and now instead of behind
    the results queue (whose message, also sent, then finds the task finished).
    """
    if task_poll(task_id=task_id, token=token) and not _hand_on_slot():
        task_finish(task_id=task_id, token=token)


def _hand_on_slot() -> bool:
    """True if work was handed on, or may have been (another process is dispatching, or held
    some accounts): only a worker sure that nothing waits stores the result itself."""
    result = dispatch_run(took_message=False)
    if result.contended:
        send_now(DISPATCH, countdown=CONTENDED_DISPATCH_RETRY)
    if result.assigned:
        task_start(task_id=result.assigned[0])
    return bool(result.assigned or result.contended or result.deferred)


def tasks_sweep() -> dict[str, int]:
    """Recover from every kind of lost work. Safe to run from several processes at once."""
    now = _now()
    report = {
        "start_deadline": 0,
        "timeout": 0,
        "restarted": 0,
        "resumed": 0,
        "lost": 0,
        "modal_expired": 0,
        "errors": 0,
    }
    report["redriven"] = _redrive_after_outage(now)

    for task_id in (
        Task.objects.filter(status=Status.NOT_START, start_deadline__lt=now)
        .order_by()
        .values_list("pk", flat=True)
    ):
        with _isolated(report, task_id):
            if task_fail(
                task_id=task_id,
                reason="No upstream account could start this task before its start deadline.",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
                from_statuses=(Status.NOT_START,),
            ):
                report["start_deadline"] += 1

    report["parent_account_gone"] = _fail_follow_ups_of_gone_accounts()

    # A job the upstream finished (its slot freed) waits only for our results queue: it times
    # out only if its result is still not stored long after its deadline.
    finishing_late = now - 2 * timedelta(seconds=float(settings.TASK_FINISH_LEASE))
    for task in Task.objects.select_related("upstream_account").filter(
        Q(slot_freed_at=None) | Q(run_deadline__lt=finishing_late),
        status__in=ACTIVE_STATUSES,
        run_deadline__lt=now,
    ):
        with _isolated(report, task.pk):
            if task_timeout(task=task, due=now):
                report["timeout"] += 1

    stale = Task.objects.select_related("upstream_account").filter(
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True),
        status__in=ACTIVE_STATUSES,
    )
    for task in stale:
        with _isolated(report, task.pk):
            if task.status == Status.SUBMITTED:
                _recover_submitted(task, now, report)
            else:
                _restart_poll_chain(task, now, report)

    for task_id in Task.objects.filter(
        status=Status.MODAL, created_at__lt=now - MODAL_EXPIRY
    ).values_list("pk", flat=True):
        with _isolated(report, task_id):
            if task_fail(
                task_id=task_id,
                reason="The task waited for its second step for too long.",
                error_code=ErrorCode.CANCELLED,
                from_statuses=(Status.MODAL,),
                status=Status.CANCEL,
            ):
                report["modal_expired"] += 1

    UpstreamAccount.objects.filter(health=Health.COOLING_DOWN, cooldown_until__lte=now).update(
        health=Health.HEALTHY, health_reason="", health_changed_at=now, cooldown_until=None
    )
    report["dispatched"] = len(dispatch_run().assigned)
    return report


def _sweep_gap(now: datetime) -> timedelta | None:
    """Record this sweep; the time lost since the previous one if the gap was longer than
    normal (``sweep_gap_threshold``), else None. The mark's row lock makes two sweeps at once
    see the gap once."""
    with transaction.atomic():
        mark = SweepMark.objects.select_for_update().filter(name=SWEEP_MARK).first()
        if mark is None:
            SweepMark.objects.get_or_create(name=SWEEP_MARK, defaults={"at": now})
            return None
        previous = mark.at
        SweepMark.objects.filter(name=SWEEP_MARK).update(at=now)
    gap = now - previous
    if gap <= sweep_gap_threshold():
        return None
    # What a sweep interval would have cost anyway is not given back.
    return gap - timedelta(seconds=float(settings.TASK_SWEEP_INTERVAL))


def _redrive_after_outage(now: datetime) -> int:
    """After a gap in sweeps (the broker, beat or every worker was down), tasks whose only
    problem was the outage are re-driven, not failed: start and run deadlines move by the time
    lost, and the start and poll messages that may have been lost are sent again (their leases
    are expired now, so this sweep's recovery below re-sends them; a duplicate is harmless).
    A submit a worker claimed keeps its own lease: whether it reached the upstream is the
    interrupted-submit recovery's question. Returns the number of tasks re-driven."""
    lost = _sweep_gap(now)
    if lost is None:
        return 0
    with transaction.atomic():
        Task.objects.filter(status=Status.NOT_START, start_deadline__isnull=False).update(
            start_deadline=F("start_deadline") + lost
        )
        Task.objects.filter(status__in=ACTIVE_STATUSES, run_deadline__isnull=False).update(
            run_deadline=F("run_deadline") + lost
        )
        redriven = (
            Task.objects.filter(status__in=ACTIVE_STATUSES)
            .exclude(status=Status.SUBMITTED, submit_claimed_at__isnull=False)
            .update(lease_expires_at=now - timedelta(microseconds=1))
        )
    logger.warning(
        "sweeps stopped for a while; deadlines pushed and messages re-sent",
        extra={"lost_seconds": lost.total_seconds(), "tasks": redriven},
    )
    return redriven


@contextmanager
def _isolated(report: dict[str, int], task_id: str) -> Iterator[None]:
    """One task the sweeper cannot handle (a bug, a broken row) must not stop it handling the
    rest: log it, count it, go on. Its own transaction has been rolled back."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise  # out of time: stop here, the next sweep carries on
    except Exception:
        report["errors"] += 1
        logger.exception("sweeping a task failed", extra={"task_id": task_id})


def _lease_expired(task: Task, now: datetime) -> Q:
    """The row still has the expired lease we saw: a worker that renewed it meanwhile is alive."""
    if task.lease_expires_at is None:
        return Q(lease_expires_at__isnull=True)
    return Q(lease_expires_at__lt=now)


def _restart_poll_chain(task: Task, now: datetime, report: dict[str, int]) -> None:
    """A new token supersedes the dead chain: should it wake up after all, it stops."""
    token = secrets.token_hex(8)
    with transaction.atomic():
        moved = Task.objects.filter(
            _lease_expired(task, now),
            pk=task.pk,
            status=Status.IN_PROGRESS,
            poll_token=task.poll_token,
        ).update(poll_token=token, lease_expires_at=poll_lease(now), updated_at=now)
        if moved:
            enqueue_poll(task.pk, token, countdown=0)
            report["restarted"] += 1


def _recover_submitted(task: Task, now: datetime, report: dict[str, int]) -> None:
    if task.submit_claimed_at is None:
        # Assigned but the start message was lost (or is still waiting in a long queue):
        # send it again. A duplicate is harmless, the first ``task_start`` claims the task.
        with transaction.atomic():
            moved = Task.objects.filter(
                _lease_expired(task, now),
                pk=task.pk,
                status=Status.SUBMITTED,
                submit_claimed_at__isnull=True,
            ).update(lease_expires_at=start_lease(now), updated_at=now)
            if moved:
                enqueue_start(task.pk)
                report["restarted"] += 1
        return
    # A worker claimed the submit and its lease (longer than the hard time limit) ran out:
    # it died somewhere inside ``engine.submit``.
    engine = engine_named(
        task.engine or (task.upstream_account.engine if task.upstream_account else "sandbox")
    )
    if engine is not None and engine.idempotent_submit:
        # The engine can tell whether that submit reached the upstream: hand the task back to
        # ``task_start``, which adopts the job if it exists and submits only if it does not.
        state = dict(task.engine_state or {})
        state[INTERRUPTED_SUBMITS] = int(state.get(INTERRUPTED_SUBMITS, 0)) + 1
        with transaction.atomic():
            moved = Task.objects.filter(
                pk=task.pk, status=Status.SUBMITTED, submit_claimed_at=task.submit_claimed_at
            ).update(
                submit_claimed_at=None,
                engine_state=state,
                lease_expires_at=start_lease(now),
                updated_at=now,
            )
            if moved:
                enqueue_start(task.pk)
                report["resumed"] += 1
        return
    # We cannot know whether the upstream got the job; failing beats submitting it twice.
    if task_fail(
        task_id=task.pk,
        reason="The worker submitting this task stopped; it was not retried to avoid running "
        "it twice.",
        error_code=ErrorCode.WORKER_LOST,
        from_statuses=(Status.SUBMITTED,),
    ):
        report["lost"] += 1


#: Why a follow-up cannot run on its parent's account: the reason shown and its error code.
_GONE = (
    "The upstream account that made the parent task is unavailable, so this follow-up cannot run.",
    ErrorCode.ACCOUNT_UNAVAILABLE,
)
_OUT_OF_FAST_HOURS = (
    "The upstream account that made the parent task has run out of fast hours, so this "
    "follow-up cannot run in {mode} mode; press the button again in RELAX mode.",
    ErrorCode.FAST_HOURS_EXHAUSTED,
)


def _parent_account_gone(task: Task) -> tuple[str, str] | None:
    """Why the follow-up cannot run (its reason and error code), or None while it can wait.

    The follow-up must run on its parent's account, and that account will not come back on
    its own: deleted, disabled by an operator, banned, or no longer serving the mode; or out
    of fast hours for a mode that needs them (fast hours come back with the next billing
    period, far beyond any start deadline; an account that falls back to relax still runs a
    FAST follow-up). Cooling down or waiting for verification may pass, so such a follow-up
    keeps waiting."""
    parent = task.parent
    if parent is None or not parent.engine:
        return None
    if not get_engine(parent.engine).follow_ups_need_parent_account:
        return None
    account = parent.upstream_account
    if (
        account is None
        or not account.is_enabled
        or account.health == Health.BANNED
        or not account.serves(task.mode)
    ):
        return _GONE
    if account.health == Health.FAST_HOURS_EXHAUSTED and task.mode not in upstream_account_modes(
        account, now=timezone.now()
    ):
        reason, code = _OUT_OF_FAST_HOURS
        return reason.format(mode=task.mode), code
    return None


def _gone_follow_ups_query() -> Q | None:
    """What ``_parent_account_gone`` says, in SQL: a sweep must not load every queued
    follow-up (a backlog of thousands, every 30 seconds) to find the few that cannot run.
    None when no installed engine binds follow-ups to their parent's account."""
    bound = [name for name in engine_names() if get_engine(name).follow_ups_need_parent_account]
    if not bound:
        return None
    gone = (
        Q(parent__upstream_account__isnull=True)
        | Q(parent__upstream_account__is_enabled=False)
        | Q(parent__upstream_account__health=Health.BANNED)
    )
    # Accounts are few; their modes live in a JSON list, which SQLite cannot search.
    now = timezone.now()
    for account in UpstreamAccount.objects.filter(engine__in=bound):
        served = [mode for mode in account.modes or [] if isinstance(mode, str)]
        if account.health == Health.FAST_HOURS_EXHAUSTED:
            served = upstream_account_modes(account, now=now)  # RELAX (and FAST on fallback)
        gone |= Q(parent__upstream_account_id=account.pk) & ~Q(mode__in=served)
    return Q(parent__engine__in=bound) & gone


def _fail_follow_ups_of_gone_accounts() -> int:
    """Fail queued follow-ups whose parent's upstream account is gone, at once and clearly,
    instead of letting them wait for their start deadline."""
    failed = 0
    gone = _gone_follow_ups_query()
    if gone is None:
        return 0
    for task in Task.objects.select_related("parent__upstream_account").filter(
        gone, status=Status.NOT_START, parent__isnull=False
    ):
        why = _parent_account_gone(task)
        if why is not None and task_fail(
            task_id=task.pk,
            reason=why[0],
            error_code=why[1],
            from_statuses=(Status.NOT_START,),
        ):
            failed += 1
    return failed


def account_pick_other(task: Task, *, exclude: int | None, now: datetime) -> UpstreamAccount:
    """The least busy usable account of ``task``'s pool with a free slot, other than
    ``exclude`` (an operator's retry). Locked like the dispatcher locks it, so the slot cannot
    be taken twice: call it inside the transaction that assigns the task. ``Conflict`` when
    no other account has a free slot now."""
    candidates = (
        UpstreamAccount.objects.select_for_update(skip_locked=True)
        .filter(is_enabled=True, is_sandbox_pool=task.is_test)
        .order_by("pk")
    )
    if exclude is not None:
        candidates = candidates.exclude(pk=exclude)
    usable = [a for a in candidates if upstream_account_usable(a, now=now, mode=task.mode)]
    running = dict(
        Task.objects.filter(
            upstream_account__in=usable, status__in=ACTIVE_STATUSES, slot_freed_at=None
        )
        .values_list("upstream_account")
        .annotate(n=Count("pk"))
        .values_list("upstream_account", "n")
    )
    free = [a for a in usable if running.get(a.pk, 0) < a.concurrency]
    if not free:
        raise Conflict(
            f"No other enabled, healthy account of the {task.mode} pool has a free slot now; "
            f"nothing was changed. Try again shortly."
        )
    return min(free, key=lambda a: (running.get(a.pk, 0), a.pk))


def task_expected_to_start(*, task: Task) -> bool:
    """Whether the dispatcher will start the queued ``task`` on its next run: an account that
    may take it has more free slots than there are tasks of its pool queued ahead of it.

    A read (no locks, nothing assigned) for the answer to a submit — "started" or "queued" —
    now that the dispatcher runs on a worker rather than in the request that accepted the
    task. A guess made honestly: fairness may let another tenant's task take the slot first.
    """
    if task.status != Status.NOT_START or task.submitted_at is None:
        return task.status in (Status.SUBMITTED, Status.IN_PROGRESS, Status.SUCCESS)
    now = _now()
    if task.is_test:
        sandbox_pool_ensure()
    accounts = [
        account
        for account in UpstreamAccount.objects.filter(
            is_enabled=True, is_sandbox_pool=task.is_test
        ).order_by("pk")
        if upstream_account_usable(account, now=now, mode=task.mode)
    ]
    parent = task.parent
    if parent is not None and parent.upstream_account_id:
        same = [a for a in accounts if a.pk == parent.upstream_account_id]
        engine = engine_named(parent.engine or "sandbox")
        if same or engine is None or engine.follow_ups_need_parent_account:
            accounts = same
        else:
            accounts = [a for a in accounts if a.engine == parent.engine] or accounts
    if not accounts:
        return False
    running = dict(
        Task.objects.filter(
            upstream_account__in=accounts, status__in=ACTIVE_STATUSES, slot_freed_at=None
        )
        .values_list("upstream_account")
        .annotate(n=Count("pk"))
        .values_list("upstream_account", "n")
    )
    free = sum(max(0, a.concurrency - running.get(a.pk, 0)) for a in accounts)
    ahead = Task.objects.filter(
        status=Status.NOT_START,
        mode=task.mode,
        is_test=task.is_test,
        submitted_at__lt=task.submitted_at,
    ).count()
    return free > ahead
