"""Reads of tasks. Every function takes the organization: tenancy fails closed."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.cache import config_cached, config_changed
from apps.core.db import prepared_cursor
from apps.core.errors import NotFound
from apps.engines.models import UpstreamAccount
from apps.engines.sandbox.engine import DEFAULT_DURATION as SANDBOX_JOB_SECONDS
from apps.engines.sandbox.engine import SandboxEngine
from apps.engines.selectors import upstream_account_takes, upstream_account_usable

from .enums import TERMINAL_STATUSES, UNFINISHED_STATUSES, Mode, Pool, Status
from .lifecycle import ACTIVE_STATUSES, engine_named
from .models import BANNED_WORDS_CACHE, BannedWord, Task
from .scheduling import sandbox_pool_ensure


def task_get(*, organization: Organization, task_id: object) -> Task:
    """A task of this organization. Another tenant's id answers exactly like a missing one."""
    if task_id is None or not str(task_id).strip():
        raise NotFound("Task not found.")
    task = (
        Task.objects.select_related("parent", "upstream_account")
        .filter(organization=organization, pk=str(task_id).strip())
        .first()
    )
    if task is None:
        raise NotFound("Task not found.")
    return task


class _TaskRowReader:
    """Tasks read by hand-written statements: by primary key and organization (fetch), or a
    page of a list.

    The API's read paths need the task's columns and nothing else: no join, no ORDER BY on a
    primary-key lookup, and no SQL built per request (building it in the ORM cost more than
    running it). The column list and converters are made once per process, from the model's
    own fields, so the reader follows schema changes.
    """

    def __init__(self) -> None:
        self._prepared: tuple[str, str, list[str], list[list[Any]], list[Any]] | None = None

    def _prepare(self) -> tuple[str, str, list[str], list[list[Any]], list[Any]]:
        if self._prepared is None:
            fields = list(Task._meta.concrete_fields)
            quote = connection.ops.quote_name
            table = quote(Task._meta.db_table)
            columns = ", ".join(f"{table}.{quote(str(f.column))}" for f in fields)
            head = f"SELECT {columns} FROM {table} WHERE "  # noqa: S608 - names from the model
            expressions = [f.get_col(Task._meta.db_table) for f in fields]
            converters = [
                connection.ops.get_db_converters(e) + e.get_db_converters(connection)
                for e in expressions
            ]
            self._prepared = (table, head, [f.attname for f in fields], converters, expressions)
        return self._prepared

    def _task(self, row: Any) -> Task:
        _, _, names, converters, expressions = self._prepare()
        values = list(row)
        for index, chain in enumerate(converters):
            for convert in chain:
                values[index] = convert(values[index], expressions[index], connection)
        if (
            not _plain_construction()
            or pre_init.has_listeners(Task)
            or post_init.has_listeners(Task)
        ):
            return Task.from_db(connection.alias, names, values)
        # What ``from_db`` makes, without ``Model.__init__``'s per-field work: every column is
        # loaded, setting an attribute of a new task does nothing but store it, and no init
        # signal listens (checked above).
        task = Task.__new__(Task)
        task.__dict__.update(zip(names, values, strict=True))
        state = ModelState()
        state.adding = False
        state.db = connection.alias
        task._state = state
        return task

    def select(self, where: str, params: list[Any]) -> list[Task]:
        """The tasks matching ``where`` (``{table}`` stands for the quoted table name)."""
        table, head, *_ = self._prepare()
        with prepared_cursor() as cursor:
            cursor.execute(head + where.format(table=table), params)
            rows = cursor.fetchall()
        return [self._task(row) for row in rows]

    def get(self, *, organization_id: int, task_id: str) -> Task | None:
        found = self.select(
            "{table}.id = %s AND {table}.organization_id = %s LIMIT 1",
            [task_id, organization_id],
        )
        return found[0] if found else None


_task_rows = _TaskRowReader()


@functools.cache
def _plain_construction() -> bool:
    """Whether storing each column's value in a new task's ``__dict__`` is what ``__init__``
    does: each field's class attribute is Django's plain deferred attribute, or a foreign key's
    (whose setter also drops a cached related object, which a new task has none of)."""
    allowed = (DeferredAttribute, ForeignKeyDeferredAttribute)
    return all(
        type(getattr(Task, str(field.attname), None)) in allowed
        for field in Task._meta.concrete_fields
    )


def task_fetch(*, organization: Organization, task_id: object) -> Task:
    """A task of this organization for rendering (the fetch endpoints): one indexed statement,
    no related rows loaded. Another tenant's id answers exactly like a missing one."""
    wanted = str(task_id).strip() if task_id is not None else ""
    if not wanted or connection.vendor != "postgresql":
        return task_get(organization=organization, task_id=task_id)
    task = _task_rows.get(organization_id=organization.pk, task_id=wanted)
    if task is None:
        raise NotFound("Task not found.")
    return task


def task_list(
    *,
    organization: Organization,
    ids: list[str] | None = None,
    statuses: list[str] | None = None,
    actions: list[str] | None = None,
    modes: list[str] | None = None,
    is_test: bool | None = None,
    search: str | None = None,
) -> QuerySet[Task]:
    qs = Task.objects.filter(organization=organization)
    if ids is not None:
        qs = qs.filter(pk__in=[str(i) for i in ids])
    if statuses:
        qs = qs.filter(status__in=statuses)
    if actions:
        qs = qs.filter(action__in=actions)
    if modes:
        qs = qs.filter(mode__in=modes)
    if is_test is not None:
        qs = qs.filter(is_test=is_test)
    if search:
        qs = qs.filter(prompt__icontains=search)
    return qs.order_by("-created_at", "-pk")


@dataclass(frozen=True)
class TaskFilters:
    """What a task list may be narrowed to (every field optional); ``task_list`` applies the
    same filters to a queryset and :func:`task_page` to one hand-built statement."""

    statuses: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    is_test: bool | None = None
    search: str | None = None


@dataclass(frozen=True)
class PageBound:
    """A row's place in the newest-first order: ``(created_at, id)``."""

    created_at: datetime
    id: str


def task_page(
    *,
    organization: Organization,
    filters: TaskFilters = TaskFilters(),
    after: PageBound | None = None,
    before: PageBound | None = None,
    limit: int,
) -> list[Task]:
    """Up to ``limit`` tasks of ``task_list``, newest first: those after ``after`` in that
    order, or (``before``) the ``limit`` closest before it, oldest first.

    On PostgreSQL one statement built by hand (index ``task_org_recent``, no SQL built by the
    ORM per request; building it cost more than running it), its rows made into tasks with the
    model's own converters."""
    if connection.vendor != "postgresql":
        return _task_page_orm(organization, filters, after=after, before=before, limit=limit)
    where, params = _page_where(organization, filters, after=after, before=before)
    order = "ASC" if before is not None else "DESC"
    return _task_rows.select(
        f"{where} ORDER BY {{table}}.created_at {order}, {{table}}.id {order} LIMIT %s",
        [*params, limit],
    )


def task_page_exists(
    *,
    organization: Organization,
    filters: TaskFilters = TaskFilters(),
    before: PageBound,
) -> bool:
    """Whether ``task_list`` has a task before ``before`` (newer than it)."""
    if connection.vendor != "postgresql":
        return _task_list_orm(organization, filters).filter(_newer_q(before)).exists()
    where, params = _page_where(organization, filters, before=before)
    table = connection.ops.quote_name(Task._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE {where.format(table=table)} LIMIT 1",  # noqa: S608
            params,
        )
        return cursor.fetchone() is not None


def _page_where(
    organization: Organization,
    filters: TaskFilters,
    *,
    after: PageBound | None = None,
    before: PageBound | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (``{table}`` to fill in) and its parameters; the same conditions
    ``task_list`` builds (``search`` as the ORM's ``icontains``)."""
    clauses = ["{table}.organization_id = %s"]
    params: list[Any] = [organization.pk]
    for column, values in (
        ("status", filters.statuses),
        ("action", filters.actions),
        ("mode", filters.modes),
    ):
        if values:
            clauses.append(f"{{table}}.{column} = ANY(%s)")
            params.append(list(values))
    if filters.is_test is not None:
        clauses.append("{table}.is_test = %s")
        params.append(filters.is_test)
    if filters.search:
        clauses.append("UPPER({table}.prompt::text) LIKE UPPER(%s)")
        params.append(f"%{connection.ops.prep_for_like_query(filters.search)}%")
    for bound, op in ((after, "<"), (before, ">")):
        if bound is not None:
            clauses.append(
                f"({{table}}.created_at {op} %s "
                f"OR ({{table}}.created_at = %s AND {{table}}.id {op} %s))"
            )
            params += [bound.created_at, bound.created_at, bound.id]
    return " AND ".join(clauses), params


def _newer_q(bound: PageBound) -> Q:
    return Q(created_at__gt=bound.created_at) | Q(created_at=bound.created_at, id__gt=bound.id)


def _task_list_orm(organization: Organization, filters: TaskFilters) -> QuerySet[Task]:
    return task_list(
        organization=organization,
        statuses=list(filters.statuses),
        actions=list(filters.actions),
        modes=list(filters.modes),
        is_test=filters.is_test,
        search=filters.search,
    )


def _task_page_orm(
    organization: Organization,
    filters: TaskFilters,
    *,
    after: PageBound | None,
    before: PageBound | None,
    limit: int,
) -> list[Task]:
    queryset = _task_list_orm(organization, filters)
    if before is not None:
        return list(queryset.filter(_newer_q(before)).order_by("created_at", "id")[:limit])
    if after is not None:
        queryset = queryset.filter(
            Q(created_at__lt=after.created_at) | Q(created_at=after.created_at, id__lt=after.id)
        )
    return list(queryset[:limit])


def task_unfinished_count(*, organization: Organization) -> int:
    return Task.objects.filter(organization=organization, status__in=UNFINISHED_STATUSES).count()


def task_queue_list(*, organization: Organization) -> QuerySet[Task]:
    """This organization's tasks that are queued or running, oldest first."""
    return Task.objects.filter(organization=organization, status__in=UNFINISHED_STATUSES).order_by(
        "submitted_at", "pk"
    )


@dataclass(frozen=True)
class QueueEstimate:
    """Where a queued task stands: ``position`` 0 means a free slot takes it now; otherwise it
    is the task's place in the line waiting for a slot (1 = next). ``expected_start`` is when
    that many slots should have opened (``_expected_start``): from the slots that may serve
    the task and its pool's typical job, or from the pool's measured throughput where that is
    faster and founded on enough finished tasks; never after the task's start deadline. None
    while no slot may serve the task and too little was measured (for an own-only task its
    organization's own accounts are the pool, and None also while none of them may take its
    mode)."""

    position: int
    expected_start: datetime | None = None
    #: Queued tasks of the pool the dispatcher starts before this one (its fair queue order).
    ahead: int = 0


#: The measured throughput counts the pool's tasks finished within this window; a pool's
#: history (that count and its typical job) is re-read this often per process.
THROUGHPUT_WINDOW = timedelta(minutes=10)
THROUGHPUT_REFRESH_SECONDS = 10.0
#: The measured throughput stands in for the slots' estimate only when at least this many of
#: the pool's tasks finished within the window: a few finishes say little about the next slot.
THROUGHPUT_MIN_FINISHED = 10
#: A pool's typical job is the mean run time of its last ``JOB_HISTORY_SIZE`` successes
#: submitted within ``JOB_HISTORY``: a pool idle since last night still has yesterday's jobs.
JOB_HISTORY_SIZE = 50
JOB_HISTORY = timedelta(hours=24)
#: A pool's history looks for its successes among at most this many of the mode's newest
#: (the live and the test pool's together): finding fewer, it averages those it found.
JOB_HISTORY_SCAN = 1_000
#: How long a job of each mode holds its slot while its pool has no success to go by.
#: Midjourney puts a fast job at about a GPU minute, turbo at up to four times faster (for
#: twice the price, SPEC §3), and a relax job waits in Midjourney's own queue before it runs.
#: A sandbox account's jobs take its ``duration`` option instead.
DEFAULT_JOB_SECONDS: dict[str, float] = {Mode.FAST: 60.0, Mode.TURBO: 20.0, Mode.RELAX: 180.0}
#: No typical job is shorter: a sandbox job set to take no time still holds its slot until a
#: poll finds it done, and no estimate divides by next to nothing.
MIN_JOB_SECONDS = 1.0


@dataclass(frozen=True)
class PoolHistory:
    """What a pool's recent past says about its next slots: ``finished``, its tasks that ran
    and finished within ``THROUGHPUT_WINDOW``; ``job_seconds``, how long its last successes
    (``jobs`` of them) held their slot on average, from the start until the upstream was done
    (None without any)."""

    finished: int = 0
    jobs: int = 0
    job_seconds: float | None = None

    @property
    def throughput(self) -> float:
        """The pool's tasks finished per second over the window."""
        return self.finished / THROUGHPUT_WINDOW.total_seconds()


_history: dict[tuple[Any, ...], tuple[float, PoolHistory]] = {}


def pool_history(*, mode: str, is_test: bool) -> PoolHistory:
    """The recent past of the pool of ``mode`` (live or test): one statement of index reads
    per pool every ``THROUGHPUT_REFRESH_SECONDS`` per process."""
    return _cached_history(("pool", mode, is_test), mode=mode, is_test=is_test)


def own_history(*, organization_id: int, mode: str) -> PoolHistory:
    """The recent past of the organization's own accounts in ``mode``, the pool its own-only
    queue moves through: one statement per organization and mode every
    ``THROUGHPUT_REFRESH_SECONDS`` per process."""
    return _cached_history(
        ("own", organization_id, mode), mode=mode, is_test=False, organization_id=organization_id
    )


def _cached_history(
    key: tuple[Any, ...], *, mode: str, is_test: bool, organization_id: int | None = None
) -> PoolHistory:
    now = time.monotonic()
    cached = _history.get(key)
    if cached is not None and now - cached[0] < THROUGHPUT_REFRESH_SECONDS:
        return cached[1]
    history = _history_read(mode=mode, is_test=is_test, organization_id=organization_id)
    _history[key] = (now, history)
    return history


def _history_sql(*, own: bool) -> str:
    quote = connection.ops.quote_name
    table = quote(Task._meta.db_table)
    terminal = ", ".join(f"'{status}'" for status in TERMINAL_STATUSES)
    successes = f"{table} t"
    if own:
        # An own account runs only its owner's tasks: the organization narrows both reads, and
        # its newest tasks come first in ``task_org_recent``.
        accounts = quote(UpstreamAccount._meta.db_table)
        owned = f"SELECT a.id FROM {accounts} a WHERE a.owner_id = %(org)s"  # noqa: S608
        scope = (
            "t.organization_id = %(org)s AND t.mode = %(mode)s AND NOT t.is_test AND "
            f"t.upstream_account_id IN ({owned})"
        )
        newest = "t.created_at"
    else:
        # The pool's successes, newest first, are one range of ``task_queue`` (status, mode,
        # submitted_at) shared by the live and the test pool: the read takes at most the
        # newest ``JOB_HISTORY_SCAN`` of them and keeps the pool's, so a pool whose successes
        # are rare among them (the test pool beside a busy live one) does not read the day.
        scope = "t.mode = %(mode)s AND t.is_test = %(is_test)s"
        newest = "t.submitted_at"
        successes = f"""(SELECT t.mode, t.is_test, t.status, t.submitted_at, t.started_at,
                                t.finished_at, t.slot_freed_at
                         FROM {table} t
                         WHERE t.status = '{Status.SUCCESS}' AND t.mode = %(mode)s
                           AND t.submitted_at >= %(horizon)s
                         ORDER BY t.submitted_at DESC LIMIT %(scan)s) t"""  # noqa: S608
    return f"""
        SELECT (SELECT count(*) FROM {table} t
                WHERE {scope} AND t.finished_at >= %(since)s
                  AND t.status IN ({terminal}) AND t.started_at IS NOT NULL),
               count(r.run), avg(r.run)
        FROM (SELECT EXTRACT(EPOCH FROM COALESCE(t.slot_freed_at, t.finished_at) - t.started_at)
                     AS run
              FROM {successes}
              WHERE {scope} AND t.status = '{Status.SUCCESS}' AND {newest} >= %(horizon)s
                AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL
              ORDER BY {newest} DESC LIMIT %(size)s) r
    """  # noqa: S608 - table names and status literals are ours; values are parameters


def _history_read(*, mode: str, is_test: bool, organization_id: int | None) -> PoolHistory:
    """``PoolHistory`` of the pool of ``mode`` (the organization's own accounts when
    ``organization_id`` is given): one statement on PostgreSQL."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _history_sql(own=organization_id is not None),
                {
                    "mode": mode,
                    "is_test": is_test,
                    "org": organization_id,
                    "since": now - THROUGHPUT_WINDOW,
                    "horizon": now - JOB_HISTORY,
                    "size": JOB_HISTORY_SIZE,
                    "scan": JOB_HISTORY_SCAN,
                },
            )
            finished, jobs, mean = cursor.fetchone()
        return PoolHistory(int(finished), int(jobs), float(mean) if mean is not None else None)
    # The portable reading (SQLite): the same numbers in two statements.
    where: dict[str, Any] = {"mode": mode, "is_test": is_test}
    newest = "submitted_at"
    if organization_id is not None:
        where |= {"organization_id": organization_id, "upstream_account__owner_id": organization_id}
        newest = "created_at"
    finished = Task.objects.filter(
        finished_at__gte=now - THROUGHPUT_WINDOW,
        status__in=TERMINAL_STATUSES,
        started_at__isnull=False,
        **where,
    ).count()
    successes = Task.objects.filter(
        status=Status.SUCCESS,
        started_at__isnull=False,
        finished_at__isnull=False,
        **{f"{newest}__gte": now - JOB_HISTORY},
        **where,
    )
    if organization_id is None:  # among the mode's newest successes, as the statement reads
        successes = successes.filter(
            pk__in=Task.objects.filter(
                status=Status.SUCCESS, mode=mode, submitted_at__gte=now - JOB_HISTORY
            )
            .order_by("-submitted_at")
            .values("pk")[:JOB_HISTORY_SCAN]
        )
    recent = successes.order_by(f"-{newest}").values_list(
        "started_at", "slot_freed_at", "finished_at"
    )[:JOB_HISTORY_SIZE]
    runs = [
        (end - started).total_seconds()
        for started, freed, done in recent
        if started is not None and (end := freed or done) is not None
    ]
    return PoolHistory(finished, len(runs), sum(runs) / len(runs) if runs else None)


def pool_throughput_forget() -> None:
    """Forget the pool histories, pool accounts and pool snapshots this process remembers
    (tests)."""
    _history.clear()
    _capacity.clear()
    _snapshots.clear()
    _free.clear()


def _accounts_with_load(*, is_test: bool) -> list[Any]:
    """The enabled accounts of the live pool or the test pool, each with its running tasks
    (``busy``, an annotation): one read."""
    if is_test:
        sandbox_pool_ensure()  # test keys need no configuration: their pool always exists
    return list(
        UpstreamAccount.objects.filter(is_enabled=True, is_sandbox_pool=is_test)
        .annotate(busy=Count("tasks", filter=Q(tasks__status__in=ACTIVE_STATUSES)))
        .order_by("pk")
    )


def _own_accounts_with_load(*, organization_id: int) -> list[Any]:
    """The organization's enabled own accounts, each with its running tasks (``busy``, counted
    as ``_accounts_with_load`` counts them): one read of a handful of rows."""
    return list(
        UpstreamAccount.objects.filter(
            owner_id=organization_id, is_enabled=True, is_sandbox_pool=False
        )
        .annotate(busy=Count("tasks", filter=Q(tasks__status__in=ACTIVE_STATUSES)))
        .order_by("pk")
    )


def _pool_free_slots(task: Task, loaded: list[Any] | None = None) -> int:
    """Free slots of the accounts that may take ``task`` (one read: accounts with their
    running counts; ``loaded``: that read, made once for a page of tasks). Which accounts
    those are is ``_serving``'s answer, the dispatcher's rule: an account whose fast hours ran
    out has no slot free for FAST work (unless it falls back to relax) nor for TURBO work,
    however idle it is. Follow-ups go to their parent's account where its engine needs that."""
    if loaded is None:
        loaded = _accounts_with_load(is_test=task.is_test)
    serving = _serving(task, loaded, timezone.now())
    return sum(max(0, a.concurrency - a.busy) for a in serving)


def _for_follow_up(task: Task, accounts: list[Any]) -> list[Any]:
    """``accounts`` narrowed for a follow-up: to its parent's account where its engine needs
    that, else to accounts of its parent's engine when there are any (a new task: all)."""
    parent = task.parent if task.parent_id else None
    if parent is None or not parent.upstream_account_id:
        return accounts
    same = [a for a in accounts if a.pk == parent.upstream_account_id]
    engine = engine_named(parent.engine or "sandbox")
    if same or engine is None or engine.follow_ups_need_parent_account:
        return same
    return [a for a in accounts if a.engine == parent.engine] or accounts


_free: dict[tuple[Any, ...], tuple[float, int]] = {}


def _recent_free_slots(task: Task) -> int:
    """``_pool_free_slots`` of ``task``, read at most every ``POOL_SNAPSHOT_SECONDS`` per pool
    and process (a follow-up, which may need its parent's account, is read each time)."""
    if task.parent_id:
        return _pool_free_slots(task)
    key = (
        task.mode,
        task.is_test,
        task.pool,
        None if task.pool == Pool.SHARED else task.organization_id,
    )
    now = time.monotonic()
    cached = _free.get(key)
    if cached is not None and now - cached[0] < POOL_SNAPSHOT_SECONDS:
        return cached[1]
    free = _pool_free_slots(task)
    _free[key] = (now, free)
    return free


#: A pool's accounts (which slots may serve a task, how long their jobs take) are re-read this
#: often per process.
CAPACITY_REFRESH_SECONDS = 5.0
_capacity: dict[bool, tuple[float, list[UpstreamAccount]]] = {}
#: What the estimate reads of an account: whether it may take a task now, its slots, and the
#: engine and options that may say how long its jobs take (its secrets stay unread).
_CAPACITY_FIELDS = (
    "owner",
    "engine",
    "modes",
    "options",
    "concurrency",
    "is_enabled",
    "is_sandbox_pool",
    "health",
    "cooldown_until",
)


def _pool_accounts(*, is_test: bool) -> list[UpstreamAccount]:
    """The enabled accounts of the live pool or the test pool, without their load: one read
    every ``CAPACITY_REFRESH_SECONDS`` per process."""
    now = time.monotonic()
    cached = _capacity.get(is_test)
    if cached is not None and now - cached[0] < CAPACITY_REFRESH_SECONDS:
        return cached[1]
    accounts = list(
        UpstreamAccount.objects.filter(is_enabled=True, is_sandbox_pool=is_test)
        .only(*_CAPACITY_FIELDS)
        .order_by("pk")
    )
    _capacity[is_test] = (now, accounts)
    return accounts


def _serving(task: Task, accounts: list[Any], now: datetime) -> list[Any]:
    """The accounts of ``accounts`` that may take ``task`` now: new work of its mode, of its
    organization and pool (a follow-up's narrowed as ``_for_follow_up`` narrows them)."""
    serving = [
        a
        for a in accounts
        if upstream_account_usable(a, now=now, mode=task.mode)
        and upstream_account_takes(
            a, organization_id=task.organization_id, pool=task.pool, is_test=task.is_test
        )
    ]
    return _for_follow_up(task, serving)


def _default_job_seconds(account: Any, mode: str) -> float:
    """How long a job of ``mode`` holds a slot of ``account`` while its pool has no history: a
    sandbox's own ``duration``, else the mode's ``DEFAULT_JOB_SECONDS``."""
    if isinstance(engine_named(account.engine), SandboxEngine):
        try:
            seconds = float((account.options or {}).get("duration", SANDBOX_JOB_SECONDS))
        except (TypeError, ValueError):
            seconds = SANDBOX_JOB_SECONDS
    else:
        seconds = DEFAULT_JOB_SECONDS.get(mode, DEFAULT_JOB_SECONDS[Mode.FAST])
    return max(seconds, MIN_JOB_SECONDS)


def _expected_start(
    task: Task, waiting: int, *, serving: list[Any], history: PoolHistory, now: datetime
) -> datetime | None:
    """When ``waiting`` slots should have opened for the queued ``task``.

    While every slot is busy, each of the ``serving`` accounts' slots opens once per typical
    job: the pool's recent mean run time (``history``), else each account's default
    (``_default_job_seconds``). So slots open at their number over the typical job a second,
    however little the pool did lately: a pool that was idle expects its slots in seconds, not
    in hours. The pool's measured throughput (its tasks finished per second lately) takes over
    only where it is faster and founded on ``THROUGHPUT_MIN_FINISHED`` tasks or more: quick
    failures free slots too, and a pool no account serves now has nothing else to go by. No
    later than the task's start deadline: a task not started by then fails, so it is the
    latest it starts at all."""
    waits = []
    if history.job_seconds is not None:
        rate = sum(a.concurrency for a in serving) / max(history.job_seconds, MIN_JOB_SECONDS)
    else:
        rate = sum(a.concurrency / _default_job_seconds(a, task.mode) for a in serving)
    if rate > 0:
        waits.append(waiting / rate)
    if history.finished >= THROUGHPUT_MIN_FINISHED:
        waits.append(waiting / history.throughput)
    if not waits:
        return None
    deadline = task.start_deadline or (task.submitted_at or now) + settings.TASK_START_DEADLINE
    return min(now + timedelta(seconds=min(waits)), max(deadline, now))


class _Unread:
    pass


UNREAD = _Unread()


@dataclass(frozen=True)
class TenantQueue:
    """One tenant's part of a pool's queue, as the fair queue estimate reads it."""

    organization_id: int
    head: int  # the smallest number (``Task.tenant_seq``) still queued
    tail: int  # the largest
    running: int  # the tenant's tasks holding a slot now, in any pool (as the dispatcher counts)

    @property
    def queued(self) -> int:
        """Queued tasks of the tenant in the pool (an upper bound when some left the middle
        of its queue: a cancelled task leaves a gap in the numbers until the queue drains)."""
        return self.tail - self.head + 1


#: A pool's snapshot is re-read this often per process; the submit path reads it, so it must
#: not run once per request (issue 15), and a second's staleness moves a position by little.
POOL_SNAPSHOT_SECONDS = 1.0
_snapshots: dict[tuple[str, bool], tuple[float, dict[int, TenantQueue]]] = {}


def _snapshot_sql() -> str:
    table = connection.ops.quote_name(Task._meta.db_table)
    queued = f"status = '{Status.NOT_START}'"  # a literal, so the partial index matches
    active = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
    return f"""
        WITH RECURSIVE orgs(org) AS (
            (SELECT organization_id FROM {table} WHERE {queued}
             ORDER BY organization_id LIMIT 1)
            UNION ALL
            SELECT (SELECT t.organization_id FROM {table} t
                    WHERE t.{queued} AND t.organization_id > orgs.org
                    ORDER BY t.organization_id LIMIT 1)
            FROM orgs WHERE orgs.org IS NOT NULL
        ),
        pool AS (
            SELECT orgs.org,
               (SELECT h.tenant_seq FROM {table} h
                WHERE h.{queued} AND h.mode = %(mode)s AND h.is_test = %(is_test)s
                  AND h.organization_id = orgs.org AND h.tenant_seq IS NOT NULL
                ORDER BY h.tenant_seq LIMIT 1) AS head
            FROM orgs WHERE orgs.org IS NOT NULL
        )
        SELECT pool.org, pool.head,
               (SELECT l.tenant_seq FROM {table} l
                WHERE l.{queued} AND l.mode = %(mode)s AND l.is_test = %(is_test)s
                  AND l.organization_id = pool.org AND l.tenant_seq IS NOT NULL
                ORDER BY l.tenant_seq DESC LIMIT 1),
               (SELECT count(*) FROM {table} r
                WHERE r.organization_id = pool.org AND r.status IN ({active})
                  AND r.slot_freed_at IS NULL)
        FROM pool WHERE pool.head IS NOT NULL
    """  # noqa: S608 - table name and status literals are ours; values are parameters


def pool_snapshot(*, mode: str, is_test: bool, fresh: bool = False) -> dict[int, TenantQueue]:
    """Every tenant with queued work in the pool: its queue's head and tail numbers and its
    running tasks. On PostgreSQL one statement of index probes whatever the queue's length (a
    skip scan over the tenants with queued work, as the dispatcher's pick does, then a few
    probes per tenant in ``task_tenant_queued``), cached ``POOL_SNAPSHOT_SECONDS`` per
    process."""
    key = (mode, is_test)
    now = time.monotonic()
    cached = _snapshots.get(key)
    if not fresh and cached is not None and now - cached[0] < POOL_SNAPSHOT_SECONDS:
        return cached[1]
    snapshot: dict[int, TenantQueue] = {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_snapshot_sql(), {"mode": mode, "is_test": is_test})
            for org, head, tail, running in cursor.fetchall():
                if head is not None:
                    snapshot[org] = TenantQueue(org, int(head), int(tail), int(running))
    else:  # the portable reading (SQLite): the same numbers from aggregates
        rows = (
            Task.objects.filter(
                status=Status.NOT_START, mode=mode, is_test=is_test, tenant_seq__isnull=False
            )
            .values("organization_id")
            .annotate(head=Min("tenant_seq"), tail=Max("tenant_seq"))
        )
        running = dict(
            Task.objects.filter(status__in=ACTIVE_STATUSES, slot_freed_at=None)
            .values_list("organization_id")
            .annotate(n=Count("pk"))
            .values_list("organization_id", "n")
        )
        for row in rows:
            org = row["organization_id"]
            snapshot[org] = TenantQueue(org, row["head"], row["tail"], running.get(org, 0))
    _snapshots[key] = (now, snapshot)
    return snapshot


def _tenant_head(task: Task) -> int | None:
    row = (
        Task.objects.filter(
            status=Status.NOT_START,
            mode=task.mode,
            is_test=task.is_test,
            organization_id=task.organization_id,
            tenant_seq__isnull=False,
        )
        .order_by("tenant_seq")
        .values_list("tenant_seq", flat=True)[:1]
    )
    found = list(row)
    return found[0] if found else None


def _probe_sql() -> str:
    table = connection.ops.quote_name(Task._meta.db_table)
    queued = f"status = '{Status.NOT_START}'"
    return f"""
        SELECT p.org, p.seq, c.submitted_at, c.id
        FROM unnest(%(orgs)s::bigint[], %(seqs)s::bigint[]) AS p(org, seq)
        CROSS JOIN LATERAL (
            SELECT t.submitted_at, t.id FROM {table} t
            WHERE t.{queued} AND t.mode = %(mode)s AND t.is_test = %(is_test)s
              AND t.organization_id = p.org AND t.tenant_seq IS NOT NULL
              AND t.tenant_seq >= p.seq
            ORDER BY t.tenant_seq LIMIT 1
        ) c
    """  # noqa: S608 - table name and status literal are ours; values are parameters


def _tied_tasks(
    *, mode: str, is_test: bool, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], tuple[Any, str]]:
    """For each (tenant ``org``, number ``seq``) in ``wanted``, the tenant's first queued task
    numbered ``seq`` or later in the pool: (submitted_at, id) by (org, seq). One statement of
    index probes, however many tasks the pairs come from (a page of a list asks once)."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _probe_sql(),
                {
                    "orgs": [org for org, _ in pairs],
                    "seqs": [seq for _, seq in pairs],
                    "mode": mode,
                    "is_test": is_test,
                },
            )
            return {
                (org, seq): (submitted_at, pk) for org, seq, submitted_at, pk in cursor.fetchall()
            }
    found: dict[tuple[int, int], tuple[Any, str]] = {}
    for org, seq in pairs:
        row = (
            Task.objects.filter(
                status=Status.NOT_START,
                mode=mode,
                is_test=is_test,
                organization_id=org,
                tenant_seq__gte=seq,
            )
            .order_by("tenant_seq")
            .values_list("submitted_at", "pk")
            .first()
        )
        if row is not None:
            found[(org, seq)] = row
    return found


def _ahead_but_ties(
    task: Task, head: int | None, snapshot: dict[int, TenantQueue]
) -> tuple[int, dict[int, int]]:
    """``task_tasks_ahead`` without the tasks tied with ``task``'s level: the count, and for
    each other tenant with a task at that level the number of that task (to probe)."""
    seq = task.tenant_seq or 0  # numbered: callers check
    rank = max(0, seq - head) if head is not None else 0
    own = snapshot.get(task.organization_id)
    level = (own.running if own is not None else 0) + rank
    ahead = rank
    wanted: dict[int, int] = {}
    for org, queue in snapshot.items():
        if org == task.organization_id:
            continue
        below = level - queue.running  # B's tasks of rank < below are at a lower level
        ahead += min(queue.queued, max(below, 0))
        if 0 <= below < queue.queued:
            wanted[org] = queue.head + below
    return ahead, wanted


def _ties_before(
    task: Task, wanted: dict[int, int], found: dict[tuple[int, int], tuple[Any, str]]
) -> int:
    """How many of the tied tasks ``found`` for ``wanted`` were submitted before ``task``."""
    mine = (task.submitted_at, task.pk)
    return sum(
        1
        for org, seq in wanted.items()
        if (tied := found.get((org, seq))) is not None and tied < mine
    )


def task_tasks_ahead(
    *, task: Task, head: int | _Unread | None = UNREAD, fresh: bool = False
) -> int:
    """How many queued tasks of the pool the dispatcher will start before ``task``.

    The dispatcher (``scheduling.dispatch_pending``) serves the tenant with the fewest running
    tasks first, oldest task first. So a queued task's turn is its *level*: its tenant's running
    tasks plus its rank among the tenant's queued tasks of the pool (0 for the oldest), ties
    going to the earlier submission. Starting a task leaves every level unchanged (its tenant
    runs one more and each of its queued tasks moves up one), so this is the exact order in
    which the current queue starts as slots open; a task finishing moves its tenant's queue
    up one level, and a newcomer's tasks join at their own level. Tasks ahead of ``task``
    (tenant A, rank r, level L = running_A + r) are r of its own tenant's, plus for every
    other tenant B those below L — min(queued_B, L − running_B) — plus B's task at level L if
    it was submitted first.

    The rank comes from the tenant's numbers (``head``: the tenant's smallest queued number as
    the caller read it), the other tenants from the pool's snapshot, and the tied tasks from
    one probe statement: no COUNT of the queue. Other pools' tasks picked in the same pass are
    not modelled (each pool is its own queue).
    """
    if task.tenant_seq is None:
        return task_queue_position(task=task) - 1  # a task queued before numbering (or SQLite)
    if isinstance(head, _Unread) or head is None:
        head = _tenant_head(task) if isinstance(head, _Unread) else None
    snapshot = pool_snapshot(mode=task.mode, is_test=task.is_test, fresh=fresh)
    ahead, wanted = _ahead_but_ties(task, head, snapshot)
    found = _tied_tasks(mode=task.mode, is_test=task.is_test, wanted=wanted.items())
    return ahead + _ties_before(task, wanted, found)


def task_queue_estimate(
    *, task: Task, head: int | _Unread | None = UNREAD, fresh: bool = False
) -> QueueEstimate:
    """Where the queued ``task`` stands in its pool's fair queue (its mode, live or test).

    ``ahead`` is how many queued tasks start before it (``task_tasks_ahead``: the
    dispatcher's own order). The first ``free`` of the queue start now; after them the task
    waits for ``ahead - free + 1`` slots to open (``position``), expected when the slots
    that may serve it have opened that often (``_expected_start``: their number over the
    pool's typical job, or its measured throughput where faster and well founded; at the
    latest its start deadline). ``head`` is the tenant's queue head as the caller read it
    (the acceptance, under its lock). For a place behind more tasks than the pool has slots
    (it cannot start now) the free slots are read at most once a second per pool and
    process: in a burst onto an idle pool they are the slots the tasks ahead take. An
    own-only task's line, slots and history are its organization's own accounts'
    (``_own_estimate_behind``).
    """
    if task.status != Status.NOT_START or task.submitted_at is None:
        return QueueEstimate(0)
    if task.pool == Pool.OWN:
        # Only the organization's own accounts serve an own-only task (and serve nothing
        # else of other tenants), so its line is the organization's own-only queue.
        ahead = task_own_queue_position(task=task) - 1
    else:
        ahead = task_tasks_ahead(task=task, head=head, fresh=fresh)
    return _estimate_behind(task, ahead)


def task_queue_estimates(*, tasks: Iterable[Task]) -> dict[str, QueueEstimate]:
    """``task_queue_estimate`` of each queued task of ``tasks`` (a page of a list), by id, in
    a few statements for the whole page instead of a few per task: each tenant's queue head
    read once per pool, and the tasks tied with any of them probed in one statement per pool.
    Tasks not queued are left out."""
    estimates: dict[str, QueueEstimate] = {}
    numbered: list[Task] = []
    page = _PageReads()
    for task in tasks:
        if task.status != Status.NOT_START or task.submitted_at is None:
            continue
        if task.pool == Pool.OWN:
            ahead = task_own_queue_position(task=task) - 1
            estimates[task.pk] = _estimate_behind(task, ahead, page)
        elif task.tenant_seq is None:
            estimates[task.pk] = task_queue_estimate(task=task)
        else:
            numbered.append(task)
    heads: dict[tuple[int, str, bool], int | None] = {}
    pools: dict[tuple[str, bool], list[tuple[Task, int, dict[int, int]]]] = {}
    for task in numbered:
        tenant_pool = (task.organization_id, task.mode, task.is_test)
        if tenant_pool not in heads:
            heads[tenant_pool] = _tenant_head(task)
        snapshot = pool_snapshot(mode=task.mode, is_test=task.is_test)
        ahead, wanted = _ahead_but_ties(task, heads[tenant_pool], snapshot)
        pools.setdefault((task.mode, task.is_test), []).append((task, ahead, wanted))
    for (mode, is_test), entries in pools.items():
        found = _tied_tasks(
            mode=mode,
            is_test=is_test,
            wanted=[pair for _, _, wanted in entries for pair in wanted.items()],
        )
        for task, ahead, wanted in entries:
            ahead += _ties_before(task, wanted, found)
            estimates[task.pk] = _estimate_behind(task, ahead, page)
    return estimates


@dataclass
class _PageReads:
    """What a page of estimates reads once for all its tasks: each pool's accounts and those
    accounts with their running tasks, and each organization's own accounts (own-only
    tasks)."""

    pools: dict[bool, list[Any]] = field(default_factory=dict)
    accounts: dict[bool, list[Any]] = field(default_factory=dict)
    own_accounts: dict[int, list[Any]] = field(default_factory=dict)


def _estimate_behind(task: Task, ahead: int, page: _PageReads | None = None) -> QueueEstimate:
    """The estimate of queued ``task`` with ``ahead`` tasks starting before it."""
    if task.pool == Pool.OWN:
        return _own_estimate_behind(task, ahead, page)
    place = ahead + 1
    now = timezone.now()
    accounts = page.pools.get(task.is_test) if page is not None else None
    if accounts is None:
        accounts = _pool_accounts(is_test=task.is_test)
        if page is not None:
            page.pools[task.is_test] = accounts
    serving = _serving(task, accounts, now)
    capacity = sum(a.concurrency for a in serving)
    # A pool just configured may not be in the remembered accounts yet: 0 is always re-read.
    busy = 0 < capacity < place and not task.is_test
    if busy and page is None:
        # Behind more tasks than the pool has slots, it cannot start now; it waits for its place
        # less the slots free now, which the tasks ahead of it take. Slots are free in a burst
        # onto an idle pool, until the dispatcher hands them out: read once a second a pool.
        free = _recent_free_slots(task)
    elif page is None:
        free = _pool_free_slots(task)
    else:
        if task.is_test not in page.accounts:
            page.accounts[task.is_test] = _accounts_with_load(is_test=task.is_test)
        free = _pool_free_slots(task, page.accounts[task.is_test])
    if place <= free:
        return QueueEstimate(0, ahead=ahead)
    waiting = place - free
    history = pool_history(mode=task.mode, is_test=task.is_test)
    expected = _expected_start(task, waiting, serving=serving, history=history, now=now)
    return QueueEstimate(waiting, expected, ahead=ahead)


def _own_estimate_behind(task: Task, ahead: int, page: _PageReads | None) -> QueueEstimate:
    """``_estimate_behind`` of an own-only task: only the organization's own accounts serve
    its line, so their free slots, their slots and their own history make the wait, however
    large the shared pool is. With none of them usable for the mode now (disabled, cooling
    down, banned, out of fast hours), nothing says when a slot opens: no
    ``expected_start``."""
    place = ahead + 1
    org = task.organization_id
    loaded = page.own_accounts.get(org) if page is not None else None
    if loaded is None:
        loaded = _own_accounts_with_load(organization_id=org)
        if page is not None:
            page.own_accounts[org] = loaded
    now = timezone.now()
    usable = [a for a in loaded if upstream_account_usable(a, now=now, mode=task.mode)]
    if not usable:
        return QueueEstimate(place, None, ahead=ahead)
    free = _pool_free_slots(task, usable)
    if place <= free:
        return QueueEstimate(0, ahead=ahead)
    waiting = place - free
    history = own_history(organization_id=org, mode=task.mode)
    serving = _for_follow_up(task, usable)
    expected = _expected_start(task, waiting, serving=serving, history=history, now=now)
    return QueueEstimate(waiting, expected, ahead=ahead)


def task_own_queue_position(*, task: Task) -> int:
    """How many of its organization's own-only queued tasks of the mode are ahead of ``task``,
    plus one (the partial index ``task_queued_fair`` covers exactly this range)."""
    ahead = Task.objects.filter(
        organization_id=task.organization_id,
        is_test=task.is_test,
        mode=task.mode,
        pool=Pool.OWN,
        status=Status.NOT_START,
        submitted_at__lt=task.submitted_at,
    ).count()
    return ahead + 1


def task_queue_position(*, task: Task) -> int:
    """How many queued tasks of the same pool are ahead of this one, plus one.

    The pool is the mode, and live and test tasks queue separately (test keys run on the
    built-in sandbox pool). Other tenants' tasks count: they share the upstream accounts.
    """
    if task.status != Status.NOT_START or task.submitted_at is None:
        return 0
    ahead = Task.objects.filter(
        status=Status.NOT_START,
        mode=task.mode,
        is_test=task.is_test,
        submitted_at__lt=task.submitted_at,
    ).count()
    return ahead + 1


def _banned_words_load() -> list[str]:
    return list(BannedWord.objects.filter(is_active=True).values_list("word", flat=True))


def banned_words_active() -> list[str]:
    """The active banned words, from the process's copy (``apps.core.cache``); an operator's
    change reaches every process within a second."""
    return config_cached(BANNED_WORDS_CACHE, _banned_words_load)


def banned_words_changed(**_: object) -> None:
    """Receiver of BannedWord's save and delete signals (connected in ``TasksConfig.ready``)."""
    config_changed(BANNED_WORDS_CACHE)
