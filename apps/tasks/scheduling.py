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

import functools
import logging
import operator
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
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

from apps.core.db import prepared_cursor
from apps.core.errors import Conflict
from apps.core.messaging import send_now
from apps.engines.base import engine_names, get_engine
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import (
    upstream_account_modes,
    upstream_account_takes,
    upstream_account_usable,
)

from . import rows
from .enums import ErrorCode, Mode, Pool, Status
from .events import tasks_changed
from .lifecycle import (
    ACTIVE_STATUSES,
    DISPATCH,
    DISPATCH_RUNNING_TTL,
    INTERRUPTED_SUBMITS,
    START_JOB,
    SWEEP_MARK,
    dispatch_keys,
    dispatch_redis,
    engine_named,
    enqueue_finish,
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
        owner=None,
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


def _takes(account: UpstreamAccount, task: Task) -> bool:
    return upstream_account_takes(
        account, organization_id=task.organization_id, pool=task.pool, is_test=task.is_test
    )


#: What choosing a slot for a queued task reads of it (``_eligible`` and the fair order): a
#: pass reads a handful of columns of each candidate, not all of them and its parent's.
_CHOOSING_FIELDS = (
    "id",
    "organization_id",
    "mode",
    "is_test",
    "submitted_at",
    "pool",
    "parent",
    "parent__upstream_account_id",
    "parent__engine",
)


def _eligible(task: Task, slots: dict[int, _Slot]) -> list[_Slot]:
    candidates = [
        slot
        for slot in slots.values()
        if slot.free > 0 and task.mode in slot.modes and _takes(slot.account, task)
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


#: One kind of queued task a free slot may take: (is_test, mode, the task's pool, the only
#: organization whose tasks it is — an own account's owner — or None for any organization).
QueuePool = tuple[bool, str, str, int | None]


def _slot_pools(account: UpstreamAccount, modes: list[str]) -> set[QueuePool]:
    """The kinds of queued task a free slot of ``account`` may take (what
    ``upstream_account_takes`` allows, as rows the pick can match against the index)."""
    if account.is_sandbox_pool:
        return {(True, mode, Pool.SHARED, None) for mode in modes}
    if account.owner_id is None:
        return {(False, mode, pool, None) for mode in modes for pool in _SHARED_TAKES}
    return {(False, mode, pool, account.owner_id) for mode in modes for pool in _OWN_TAKES}


_SHARED_TAKES = (Pool.SHARED, Pool.OWN_THEN_SHARED)
_OWN_TAKES = (Pool.OWN, Pool.OWN_THEN_SHARED)


@dataclass
class _Pick:
    """What a fair pick found: the candidates (ids), the running count of every tenant with
    queued work (None: not read, the pass counts them), and whether tasks were left out that
    a slot still free after this pick's candidates may take (the pass then picks again the
    long way, ``_queued_candidates_lateral``)."""

    ids: list[str]
    running: dict[int, int] | None = None
    truncated: bool = False


def _free_pools(slots: dict[int, _Slot]) -> set[QueuePool]:
    pools: set[QueuePool] = set()
    for slot in slots.values():
        if slot.free > 0:
            pools |= _slot_pools(slot.account, slot.modes)
    return pools


def _queued_candidates(slots: dict[int, _Slot]) -> _Pick:
    """Queued tasks worth considering now, fair across tenants.

    Only modes and pools with a free slot are read (a backlog of RELAX tasks cannot hide the
    FAST ones, nor one tenant's tasks for its own busy accounts the shared pool's). On
    PostgreSQL only the tenants the fair order can reach with the free slots are read, a few
    of their oldest tasks each (``_queued_candidates_fair``); elsewhere each tenant contributes
    at most as many tasks as there are free slots, oldest first, ordered by their rank within
    the tenant: the window is fair however large one tenant's backlog is.
    """
    free = sum(slot.free for slot in slots.values() if slot.free > 0)
    pools = _free_pools(slots)
    if not pools:
        return _Pick([])
    ordered = sorted(pools, key=lambda p: (p[0], p[1], p[2], p[3] or 0))
    if connection.vendor == "postgresql":
        return _queued_candidates_fair(slots, set(ordered))
    return _Pick(_queued_candidates_window(ordered, free), truncated=False)


def _queued_candidates_window(pools: list[QueuePool], free: int) -> list[str]:
    """The portable pick (SQLite, the embedded run): rank every servable queued row within its
    tenant, for shared and own slots apart (a tenant's older backlog for the shared pool must
    not hide its tasks for its own free accounts, nor the reverse). Correct anywhere; on
    PostgreSQL the LATERAL pick gives the same answer cheaply."""
    best: dict[str, tuple[int, datetime | None, str]] = {}
    for shared in (True, False):
        kinds = []
        for is_test, mode, pool, owner in pools:
            if (owner is None) != shared:
                continue
            kind = Q(is_test=is_test, mode=mode, pool=pool)
            kinds.append(kind & Q(organization_id=owner) if owner is not None else kind)
        if not kinds:
            continue
        ranked = (
            Task.objects.filter(functools.reduce(operator.or_, kinds), status=Status.NOT_START)
            .annotate(
                rank=Window(
                    RowNumber(),
                    partition_by=[F("organization_id")],
                    order_by=[F("submitted_at").asc(), F("pk").asc()],
                )
            )
            .filter(rank__lte=free)
            .values_list("pk", "rank", "submitted_at")
        )
        for pk, rank, submitted_at in ranked:
            if pk not in best or rank < best[pk][0]:
                best[pk] = (rank, submitted_at, pk)
    order = sorted(best.values(), key=lambda r: (r[0], r[1].timestamp() if r[1] else 0.0, r[2]))
    return [pk for _, _, pk in order][:DISPATCH_WINDOW]


def _queued_candidates_lateral(pools: list[QueuePool], free: int) -> list[str]:
    """``_queued_candidates`` on PostgreSQL, reading a handful of index entries whatever the
    queue length: the tenants with queued work by a skip scan of the partial index on queued
    rows (``task_queued_fair``), then for each tenant and servable pool its ``free`` oldest
    tasks (``LATERAL … LIMIT``; an own account's pools only for its owner), ranked within the
    tenant. The same answer as the portable window query, without reading and sorting every
    queued row."""
    sql, params = lateral_pick_sql(pools, free)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def lateral_pick_sql(pools: list[QueuePool], free: int) -> tuple[str, list[Any]]:
    """The SQL and parameters of the LATERAL pick (also for EXPLAIN in tests and benches).

    Tasks are ranked within their tenant for shared and own slots apart (a tenant's older
    shared backlog must not hide its tasks for its own free accounts). A task both may take
    (``own_then_shared``) is ranked in each and kept once, at its better rank."""
    table = connection.ops.quote_name(Task._meta.db_table)
    queued = f"status = '{Status.NOT_START}'"  # a literal, so the partial index matches
    values = ", ".join(["(%s, %s, %s, %s::bigint)"] * len(pools))
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
        pools(is_test, mode, pool, owner) AS (VALUES {values}),
        found AS (
            SELECT DISTINCT orgs.org, pools.owner IS NULL AS shared, c.id, c.submitted_at
            FROM orgs JOIN pools ON pools.owner IS NULL OR pools.owner = orgs.org
            CROSS JOIN LATERAL (
                SELECT t.id, t.submitted_at FROM {table} t
                WHERE t.{queued} AND t.organization_id = orgs.org
                  AND t.is_test = pools.is_test AND t.mode = pools.mode
                  AND t.pool = pools.pool
                ORDER BY t.submitted_at, t.id LIMIT %s
            ) c
            WHERE orgs.org IS NOT NULL
        ),
        picked AS (
            SELECT id, submitted_at,
                   row_number() OVER (
                       PARTITION BY org, shared ORDER BY submitted_at, id
                   ) AS rank
            FROM found
        )
        SELECT id FROM picked WHERE rank <= %s
        GROUP BY id, submitted_at
        ORDER BY min(rank), submitted_at, id LIMIT %s
    """  # noqa: S608 - table name and status literal are ours; values are parameters
    params: list[Any] = [v for pool in pools for v in pool]
    params += [free, free, DISPATCH_WINDOW]
    return sql, params


# --- the fair pick by tenant heads (PostgreSQL) ----------------------------------------------
#
# The fair order serves the tenant with the fewest tasks holding a slot next, its oldest task
# first. So which tenants the free slots can reach follows from two small things per tenant:
# its running count and its queue's head in each pool. One statement walks the partial index of
# queued rows from one (tenant, test flag, mode, pool) to the next — one probe each, whose
# first entry is that pool's head — and counts the running tasks; the quotas follow in Python
# (``_fair_quotas``); a second statement reads each reached tenant's oldest tasks up to its
# quota. About (tenants x pools in use) + (free slots) index entries whatever the queue length,
# and no sort of the queue.

_HEADS_SQL: str | None = None
_TAKE_SQL: str | None = None


def _heads_sql() -> str:
    """Every (tenant, is_test, mode, pool) with queued work and its head, with the tenant's
    count of tasks holding a slot (a fixed statement, built once from the model)."""
    global _HEADS_SQL
    if _HEADS_SQL is None:
        table = connection.ops.quote_name(Task._meta.db_table)
        queued = f"status = '{Status.NOT_START}'"
        active = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
        key = "organization_id, is_test, mode, pool"
        order = f"{key}, submitted_at, id"
        _HEADS_SQL = f"""
            WITH RECURSIVE heads AS (
                (SELECT {key}, submitted_at, id FROM {table} WHERE {queued}
                 ORDER BY {order} LIMIT 1)
                UNION ALL
                SELECT n.* FROM heads h CROSS JOIN LATERAL (
                    SELECT {key}, submitted_at, id FROM {table} t
                    WHERE t.{queued} AND (t.organization_id, t.is_test, t.mode, t.pool)
                        > (h.organization_id, h.is_test, h.mode, h.pool)
                    ORDER BY {order} LIMIT 1
                ) n
            ),
            running AS (
                SELECT organization_id, count(*) AS n FROM {table}
                WHERE status IN ({active}) AND slot_freed_at IS NULL
                GROUP BY organization_id
            )
            SELECT heads.organization_id, heads.is_test, heads.mode, heads.pool,
                   coalesce((extract(epoch FROM heads.submitted_at) * 1000000)::bigint, 0), heads.id,
                   coalesce(running.n, 0)
            FROM heads LEFT JOIN running USING (organization_id)
        """  # noqa: S608 - table name and status literals are ours
    return _HEADS_SQL


def _take_sql() -> str:
    """The oldest queued tasks of given (tenant, is_test, mode, pool), up to a quota each."""
    global _TAKE_SQL
    if _TAKE_SQL is None:
        table = connection.ops.quote_name(Task._meta.db_table)
        queued = f"status = '{Status.NOT_START}'"
        _TAKE_SQL = f"""
            SELECT c.id, w.k FROM unnest(
                %s::bigint[], %s::boolean[], %s::text[], %s::text[], %s::int[]
            ) WITH ORDINALITY AS w(org, is_test, mode, pool, quota, k)
            CROSS JOIN LATERAL (
                SELECT t.id FROM {table} t
                WHERE t.{queued} AND t.organization_id = w.org AND t.is_test = w.is_test
                  AND t.mode = w.mode AND t.pool = w.pool
                ORDER BY t.submitted_at, t.id LIMIT w.quota
            ) c
        """  # noqa: S608 - table name and status literal are ours; values are parameters
    return _TAKE_SQL


#: Tasks the quick pick reads beyond what the free slots take: passes of different accounts
#: run side by side (``_hand_on_slot``) and may both reach for the same head, which one of
#: them then skips (locked); a spare or two spares it the long way round.
FAIR_PICK_SPARE = 2

#: A tenant's oldest servable task: when it was submitted (microseconds since the epoch, which
#: orders as the timestamp does and is cheaper to read) and its id.
_Head = tuple[int, str]


def _fair_quotas(tenants: dict[int, tuple[int, _Head]], free: int) -> dict[int, int]:
    """How many tasks of each tenant the fair order may give ``free`` slots to, at most.

    The order serves the tenant with the fewest running tasks, its oldest task first, one at a
    time. Every tenant below the level ``top - 1`` is raised to it (``top``: the lowest level
    the free slots reach, counting each tenant without limit), and the slots left over go, one
    each, to tenants at ``top - 1`` in the order of their next task: of those that start there,
    only the ones with the oldest heads (the others' next tasks are not known, so they all may
    get one). An upper bound: a tenant with fewer tasks than its quota leaves slots over, and
    the caller picks again the long way for those (``_Pick.truncated``)."""
    if not tenants or free <= 0:
        return {}
    levels = [running for running, _ in tenants.values()]

    def reach(level: int) -> int:
        return sum(max(0, level - running) for running in levels)

    top = min(levels) + 1
    while reach(top) < free:
        top += 1
    left = free - reach(top - 1)
    quotas = {org: max(0, top - 1 - running) for org, (running, _) in tenants.items()}
    for org, (running, _) in tenants.items():
        if running < top - 1:
            quotas[org] += 1
    starting = sorted((head, org) for org, (running, head) in tenants.items() if running == top - 1)
    for _, org in starting[:left]:
        quotas[org] += 1
    return {org: quota for org, quota in quotas.items() if quota > 0}


def _queued_candidates_fair(slots: dict[int, _Slot], pools: set[QueuePool]) -> _Pick:
    """``_queued_candidates`` on PostgreSQL: the tenants' heads and running counts in one
    statement, the quotas of the tenants the free slots reach (live and test slots apart;
    an own account's free slots add to its owner's quota), then those tenants' oldest tasks
    up to their quotas in a second statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_heads_sql())
        rows = cursor.fetchall()
    running: dict[int, int] = {}
    kinds: dict[tuple[int, bool], list[tuple[bool, str, str]]] = defaultdict(list)
    heads: dict[tuple[int, bool], _Head] = {}
    for org, is_test, mode, pool, submitted_at, task_id, count in rows:
        running[org] = int(count)
        if (is_test, mode, pool, None) not in pools and (is_test, mode, pool, org) not in pools:
            continue
        kinds[(org, is_test)].append((is_test, mode, pool))
        head = (submitted_at, task_id)
        if (org, is_test) not in heads or head < heads[(org, is_test)]:
            heads[(org, is_test)] = head
    if not kinds:
        return _Pick([], running)
    quotas: dict[tuple[int, bool], int] = {}
    for is_test in (False, True):
        free = sum(
            s.free for s in slots.values() if s.free > 0 and s.account.is_sandbox_pool == is_test
        )
        tenants = {
            org: (running[org], head) for (org, test), head in heads.items() if test == is_test
        }
        for org, quota in _fair_quotas(tenants, free + FAIR_PICK_SPARE if free else 0).items():
            quotas[(org, is_test)] = quota
    for slot in slots.values():
        owner = slot.account.owner_id
        if slot.free > 0 and owner is not None and (owner, False) in kinds:
            quotas[(owner, False)] = quotas.get((owner, False), 0) + slot.free
    wanted = [
        (org, kind, quota)
        for (org, is_test), quota in quotas.items()
        for kind in kinds[(org, is_test)]
    ]
    # Tenants the quotas leave out may still have work a slot could take if the chosen
    # tenants' tasks do not fill the slots (fewer than the quota, or none eligible).
    truncated = len(quotas) < len(kinds)
    if not wanted:
        return _Pick([], running, truncated)
    with prepared_cursor() as cursor:
        cursor.execute(
            _take_sql(),
            [
                [org for org, _, _ in wanted],
                [kind[0] for _, kind, _ in wanted],
                [kind[1] for _, kind, _ in wanted],
                [kind[2] for _, kind, _ in wanted],
                [quota for _, _, quota in wanted],
            ],
        )
        taken = cursor.fetchall()
    found: dict[int, int] = defaultdict(int)
    ids = []
    for task_id, k in taken:
        found[k] += 1
        ids.append(task_id)
    truncated = truncated or any(found[k + 1] >= w[2] for k, w in enumerate(wanted))
    return _Pick(ids, running, truncated)


def dispatch_pending(*, start_first: bool = False, account_id: int | None = None) -> DispatchResult:
    """Assign queued tasks to free account slots (least busy account first, fair to tenants).

    ``start_first``: the caller submits the first task assigned itself, at once (the worker
    that just freed a slot): no start message is sent for it (should the caller die first,
    the sweeper sends it when the task's start lease runs out). ``account_id``: fill only that
    account's free slots (the slot the caller just freed); ``contended`` then says another
    pass holds it."""
    now = _now()
    fixed = rows.fixed_sql()
    if account_id is not None:
        enabled_pools, sandbox_wanted = {account_id: False}, False
    elif fixed:
        enabled_pools, sandbox_wanted = rows.accounts_enabled()
    else:
        enabled_pools = dict(
            UpstreamAccount.objects.filter(is_enabled=True).values_list("pk", "is_sandbox_pool")
        )
        sandbox_wanted = (
            not any(enabled_pools.values())
            and Task.objects.filter(status=Status.NOT_START, is_test=True).exists()
        )
    if sandbox_wanted:
        sandbox_pool_ensure()
    # A pass in a transaction of its own commits without waiting for the disk: what it writes
    # (assignments, not yet submitted anywhere) is made again should PostgreSQL lose it.
    own_transaction = not transaction.get_connection().in_atomic_block
    with transaction.atomic():
        enabled = set(enabled_pools)
        if fixed:
            locked = rows.accounts_lock_free(account_id, relaxed=own_transaction)
        else:
            chosen_accounts = UpstreamAccount.objects.filter(is_enabled=True)
            if account_id is not None:
                chosen_accounts = chosen_accounts.filter(pk=account_id)
            locked = list(
                chosen_accounts.select_for_update(skip_locked=True)
                .defer("secrets")  # encrypted, and only the engine running a job needs them
                .order_by("pk")
            )
        contended = bool(enabled - {account.pk for account in locked})
        accounts = [account for account in locked if upstream_account_usable(account, now=now)]
        if not accounts:
            return DispatchResult([], contended)
        # Counted after the lock, in a statement of its own (so it sees what the pass that
        # held an account last committed).
        if fixed:
            running = rows.accounts_holding([a.pk for a in accounts])
        else:
            running = _slots_held(accounts)
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
        free_before = sum(slot.free for slot in slots.values() if slot.free > 0)
        pick = _queued_candidates(slots)
        org_running: dict[int, int] = defaultdict(int)
        chosen_pairs: list[tuple[Task, UpstreamAccount]] = []
        waiting = _lock_queued(pick.ids, org_running, pick.running)
        _choose(waiting, slots, org_running, chosen_pairs)
        if pick.truncated and any(slot.free > 0 for slot in slots.values()):
            # The quick pick's tenants did not fill every slot and it left some out: pick
            # again among all of them (rare: follow-ups waiting for their parent's account,
            # a tenant with fewer tasks than its quota).
            # (Each tenant's oldest up to all the pass's free slots, as the full pick reads
            # them: the quick pick's are among those.)
            pools = sorted(_free_pools(slots), key=lambda p: (p[0], p[1], p[2], p[3] or 0))
            seen = set(pick.ids)
            full = _queued_candidates_lateral(pools, free_before)
            more = [pk for pk in full if pk not in seen]
            waiting += _lock_queued(more, org_running, pick.running)
            _choose(waiting, slots, org_running, chosen_pairs)
        if not chosen_pairs:
            return DispatchResult([], contended)
        assigned = _assign(chosen_pairs, now, start_first=start_first)
    if assigned:
        logger.info("dispatched", extra={"count": len(assigned)})
    return DispatchResult(assigned, contended)


def _lock_queued(
    ids: list[str], org_running: dict[int, int], known: dict[int, int] | None
) -> list[Task]:
    """Lock the candidates still queued (``SKIP LOCKED``: another pass has them) and note
    their tenants' running counts in ``org_running`` (read here unless the pick read them)."""
    if not ids:
        return []
    if rows.fixed_sql():
        queued = rows.tasks_lock_queued(ids)
    else:
        queued = list(
            Task.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("parent")
            .only(*_CHOOSING_FIELDS)
            .filter(pk__in=ids, status=Status.NOT_START)
        )
    orgs = {t.organization_id for t in queued}
    if known is not None:
        org_running.update({org: known.get(org, 0) for org in orgs - org_running.keys()})
        return queued
    org_running.update(
        Task.objects.filter(
            organization_id__in=orgs - org_running.keys(),
            status__in=ACTIVE_STATUSES,
            slot_freed_at=None,
        )
        .values_list("organization_id")
        .annotate(n=Count("pk"))
        .values_list("organization_id", "n")
    )
    return queued


def _choose(
    waiting: list[Task],
    slots: dict[int, _Slot],
    org_running: dict[int, int],
    chosen_pairs: list[tuple[Task, UpstreamAccount]],
) -> None:
    """Give free slots to ``waiting`` tasks in the fair order, one at a time: the tenant with
    the fewest running tasks next, its oldest task first. Chosen tasks leave ``waiting``."""
    while waiting and any(slot.free > 0 for slot in slots.values()):
        waiting.sort(key=lambda t: (org_running[t.organization_id], t.submitted_at, t.pk))
        chosen = None
        for task in waiting:
            options = _eligible(task, slots)
            if options:
                # Own accounts first (own_then_shared), then the least busy.
                chosen = (
                    task,
                    min(
                        options,
                        key=lambda s: (s.account.owner_id is None, s.running, s.account.pk),
                    ),
                )
                break
        if chosen is None:
            return
        task, slot = chosen
        waiting.remove(task)
        slot.free -= 1
        slot.running += 1
        org_running[task.organization_id] += 1
        chosen_pairs.append((task, slot.account))


def _assign(
    pairs: list[tuple[Task, UpstreamAccount]], now: datetime, *, start_first: bool = False
) -> list[str]:
    """Write every assignment of a pass in one statement (the rows are locked by the caller,
    still NOT_START), then the events (the rows read back in one statement) and the start
    messages (sent after commit; none for the first task when the caller starts it)."""
    ids = [task.pk for task, _ in pairs]
    if rows.fixed_sql():
        written = rows.tasks_assign(
            [
                (
                    task.pk,
                    account.pk,
                    account.engine,
                    now + timedelta(seconds=account.run_timeout_seconds),
                )
                for task, account in pairs
            ],
            lease=start_lease(now),
            now=now,
        )
        fresh = {task.pk: task for task, _ in written}
        tasks_changed(
            tasks=[fresh[task_id] for task_id in ids],
            event_type="task.updated",
            with_endpoints={task.organization_id for task, hooked in written if hooked},
        )
        for task_id in ids[1:] if start_first else ids:
            enqueue_start(task_id)
        return ids
    account_of = [When(pk=task.pk, then=Value(account.pk)) for task, account in pairs]
    engine_of = [When(pk=task.pk, then=Value(account.engine)) for task, account in pairs]
    deadline_of = [
        When(pk=task.pk, then=Value(now + timedelta(seconds=account.run_timeout_seconds)))
        for task, account in pairs
    ]
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
    fresh = {task.pk: task for task in Task.objects.filter(pk__in=ids)}
    tasks_changed(tasks=[fresh[task_id] for task_id in ids], event_type="task.updated")
    for task_id in ids[1:] if start_first else ids:
        enqueue_start(task_id)
    return ids


#: Passes one coalesced run makes at most before it hands over to a fresh message.
MAX_COALESCED_PASSES = 50


def _slots_held(accounts: Iterable[UpstreamAccount]) -> dict[int, int]:
    """Tasks holding a slot of each of ``accounts`` (started, slot not freed yet), by id:
    the ORM reading of ``rows.accounts_holding``."""
    return dict(
        Task.objects.filter(
            upstream_account__in=accounts, status__in=ACTIVE_STATUSES, slot_freed_at=None
        )
        .values_list("upstream_account")
        .annotate(n=Count("pk"))
        .values_list("upstream_account", "n")
    )


def dispatch_run(*, took_message: bool = True, start_first: bool = False) -> DispatchResult:
    """Run dispatch passes until nobody asks for another; the entry point of the dispatch
    message (``lifecycle.kick_dispatcher`` explains the flags).

    Only one process runs passes at a time: one that finds another running leaves the request
    to it and returns at once, so finished tasks no longer set off a crowd of passes that
    collide on the account locks. Without Redis (the embedded run) each message is one pass.
    ``took_message=False``: run without a dispatch message (a worker that just freed a slot);
    a message on its way stays marked as such. ``start_first``: the caller submits the first
    task assigned itself (``dispatch_pending``), so no start message is sent for that one.
    """
    client = dispatch_redis()
    if client is None:
        return dispatch_pending(start_first=start_first)
    queued, again, running = dispatch_keys()
    owner = secrets.token_hex(8)
    try:
        if not _flag_script(client, _ACQUIRE)(
            keys=[queued, again, running],
            args=[owner, DISPATCH_RUNNING_TTL, 1 if took_message else 0],
        ):
            # The running one sees ``again`` before it stops.
            return DispatchResult([], deferred=True)
    except redis.RedisError:
        logger.warning("dispatch flags unreadable; one pass", exc_info=True)
        return dispatch_pending(start_first=start_first)
    assigned: list[str] = []
    contended = False
    try:
        for _ in range(MAX_COALESCED_PASSES):
            result = dispatch_pending(start_first=start_first and not assigned)
            assigned.extend(result.assigned)
            contended = result.contended
            # One more pass if a kick came meanwhile, else let go (atomically: a kick after
            # this finds nobody running and sends or runs its own pass).
            if _flag_script(client, _AGAIN_OR_RELEASE)(
                keys=[again, running], args=[owner, DISPATCH_RUNNING_TTL]
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


# The coalescing flags' two steps as Redis scripts: one round trip each, and atomic, so no
# kick falls between looking at ``again`` and letting go of ``running``.
#: Take the dispatcher: KEYS queued, again, running; ARGV owner, ttl, took_message.
#: A caller that finds another pass running leaves ``again`` set for it (the kick that sent a
#: message set it already; a worker that freed a slot and runs no message sets it here).
_ACQUIRE = """
if ARGV[3] == '1' then redis.call('del', KEYS[1]) end
if redis.call('set', KEYS[3], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
    redis.call('del', KEYS[2])
    return 1
end
redis.call('set', KEYS[2], 1, 'EX', tonumber(ARGV[2]))
return 0
"""
#: After a pass: KEYS again, running; ARGV owner, ttl. 1 (and ``again`` cleared, ``running``
#: renewed) when another pass is wanted, else 0 with ``running`` released if still ours.
_AGAIN_OR_RELEASE = """
if redis.call('del', KEYS[1]) == 1 then
    redis.call('expire', KEYS[2], tonumber(ARGV[2]))
    return 1
end
if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('del', KEYS[2]) end
return 0
"""
_scripts: dict[tuple[int, str], Any] = {}


def _flag_script(client: Any, source: str) -> Any:
    """``source`` registered with ``client`` (once per client; run by its SHA after)."""
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script


#: Seconds before a dispatch that met another dispatcher's account locks runs again.
CONTENDED_DISPATCH_RETRY = 0.5
#: A poll step whose freed slot's account is held by another pass tries its own pass again
#: this many times, this many seconds apart, before it leaves the slot to the general pass
#: (and, should that meet the lock too, to the retry above: half a second of an idle slot,
#: the largest gap ``bench/dispatch.py`` saw; issue 15, P2).
OWN_PASS_RETRIES = 4
OWN_PASS_RETRY_DELAY = 0.01


def poll_step(*, task_id: str, token: str) -> None:
    """The poll message's work: one poll step and, when it freed a slot, the hand-on.

    The process that freed the slot is free itself at that moment: it runs the dispatcher
    rather than send a message for another process to pick up, and submits the first task
    the pass assigned (no start message is sent for that one), so the slot goes from freed to
    the next submit without a hop; only then does it ask the results queue to make and store
    the result. When nothing was waiting for the slot and few other jobs are running (their
    polls have the worker's other processes), it makes and stores the result here and now
    instead (no message: should it die first, the finish lease runs out and the sweeper
    restarts the poll chain).
    """
    freed = task_poll(task_id=task_id, token=token, defer_finish=True)
    if freed is None:
        return
    try:
        handed_on = _hand_on_slot(freed.account_id)
    except BaseException:
        if freed.finish_pending:
            enqueue_finish(task_id, token)
        raise
    if not freed.finish_pending:
        return  # the result was stored in the poll step already
    if handed_on or _other_jobs_running(task_id) > INLINE_FINISH_MAX_OTHERS:
        # Only now: the next task's submit went first (this message's publish is not on the
        # slot's way from freed to busy again). With many jobs still running, their polls
        # could queue behind the image work of several processes at once: the results queue
        # makes the result instead.
        enqueue_finish(task_id, token)
    else:
        task_finish(task_id=task_id, token=token)


#: A poll step whose freed slot had nothing waiting makes the result itself (no hop through
#: the results queue, whose worker is niced) while at most this many other jobs hold slots:
#: the engine worker's other processes (4 by default) are left for their polls. With more
#: running (the end of a burst: every poll step finds the queue empty), each would hold its
#: process for the image work and the last polls would come late (issue 15, P2).
INLINE_FINISH_MAX_OTHERS = 2


def _other_jobs_running(task_id: str) -> int:
    """How many jobs other than ``task_id`` hold an upstream slot, counted up to one more
    than :data:`INLINE_FINISH_MAX_OTHERS`."""
    return (
        Task.objects.filter(status__in=ACTIVE_STATUSES, slot_freed_at__isnull=True)
        .exclude(pk=task_id)
        .values("pk")[: INLINE_FINISH_MAX_OTHERS + 1]
        .count()
    )


def _hand_on_slot(account_id: int) -> bool:
    """True if work was handed on, or may have been (another process is dispatching, or held
    some accounts): only a worker sure that nothing waits stores the result itself.

    First a pass of the freed slot's own account alone: it needs no turn at the coalesced
    dispatcher (passes of other accounts run beside it, each locks its own accounts), so the
    next task starts here even while another process dispatches. Only if that account is held
    by another pass, or nothing queued fits it, the general pass runs (coalesced)."""
    result = dispatch_pending(start_first=True, account_id=account_id)
    for _ in range(OWN_PASS_RETRIES):
        if result.assigned or not result.contended:
            break
        # Another pass holds the account: most often the poll step of another of its slots
        # freed at the same moment, whose pass may have counted this slot as still held
        # (its count came before this release committed) and so left it out. Such a pass
        # takes milliseconds: once it lets go, this step's own pass sees the slot free.
        time.sleep(OWN_PASS_RETRY_DELAY)
        result = dispatch_pending(start_first=True, account_id=account_id)
    if not result.assigned:
        result = dispatch_run(took_message=False, start_first=True)
    if result.contended:
        send_now(DISPATCH, countdown=CONTENDED_DISPATCH_RETRY)
    if result.assigned:
        try:
            task_start(task_id=result.assigned[0])
        except BaseException:
            # Its start message was left out for this call: send it now (a duplicate of a
            # start that got as far as its claim is harmless, ``task_start`` claims once).
            send_now(START_JOB, result.assigned[0])
            raise
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
    # Only the row as read: an operator who moved the task to another account meanwhile (a
    # new claim, a fresh lease) has a live run, which this must not fail.
    if task_fail(
        task_id=task.pk,
        reason="The worker submitting this task stopped; it was not retried to avoid running "
        "it twice.",
        error_code=ErrorCode.WORKER_LOST,
        from_statuses=(Status.SUBMITTED,),
        where=Q(submit_claimed_at=task.submit_claimed_at) & _lease_expired(task, now),
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
    usable = [
        a
        for a in candidates
        if upstream_account_usable(a, now=now, mode=task.mode) and _takes(a, task)
    ]
    running = _slots_held(usable)
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
        if upstream_account_usable(account, now=now, mode=task.mode) and _takes(account, task)
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
    running = _slots_held(accounts)
    free = sum(max(0, a.concurrency - running.get(a.pk, 0)) for a in accounts)
    ahead = Task.objects.filter(
        status=Status.NOT_START,
        mode=task.mode,
        is_test=task.is_test,
        submitted_at__lt=task.submitted_at,
    ).count()
    return free > ahead
