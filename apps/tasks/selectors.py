"""Reads of tasks. Every function takes the organization: tenancy fails closed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.cache import config_cached, config_changed
from apps.core.errors import NotFound
from apps.engines.models import UpstreamAccount
from apps.engines.selectors import upstream_account_takes, upstream_account_usable

from .enums import TERMINAL_STATUSES, UNFINISHED_STATUSES, Pool, Status
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
    """One task by primary key and organization, as one prepared statement.

    The API's fetch path needs the task's columns and nothing else: no join, no ORDER BY (a
    primary-key lookup has one row), and no SQL built per request (building it in the ORM
    cost more than running it). The statement and the column converters are made once per
    process, from the model's own fields, so the reader follows schema changes.
    """

    def __init__(self) -> None:
        self._prepared: tuple[str, list[str], list[list[Any]], list[Any]] | None = None

    def _prepare(self) -> tuple[str, list[str], list[list[Any]], list[Any]]:
        if self._prepared is None:
            fields = list(Task._meta.concrete_fields)
            quote = connection.ops.quote_name
            table = quote(Task._meta.db_table)
            columns = ", ".join(f"{table}.{quote(str(f.column))}" for f in fields)
            sql = (
                f"SELECT {columns} FROM {table} "  # noqa: S608 - names from the model
                f"WHERE {table}.{quote('id')} = %s AND {table}.{quote('organization_id')} = %s "
                "LIMIT 1"
            )
            expressions = [f.get_col(Task._meta.db_table) for f in fields]
            converters = [
                connection.ops.get_db_converters(e) + e.get_db_converters(connection)
                for e in expressions
            ]
            self._prepared = (sql, [f.attname for f in fields], converters, expressions)
        return self._prepared

    def get(self, *, organization_id: int, task_id: str) -> Task | None:
        sql, names, converters, expressions = self._prepare()
        with connection.cursor() as cursor:
            cursor.execute(sql, [task_id, organization_id])
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row)
        for index, chain in enumerate(converters):
            for convert in chain:
                values[index] = convert(values[index], expressions[index], connection)
        return Task.from_db(connection.alias, names, values)


_task_rows = _TaskRowReader()


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
    is the task's place in the line waiting for a slot (1 = next). ``expected_start`` comes
    from the pool's measured throughput (None until tasks of the pool have finished lately)."""

    position: int
    expected_start: datetime | None = None


#: Throughput is measured over this window of finished tasks and re-read this often.
THROUGHPUT_WINDOW = timedelta(minutes=10)
THROUGHPUT_REFRESH_SECONDS = 10.0
_throughput: dict[tuple[str, bool], tuple[float, float]] = {}


def pool_throughput(*, mode: str, is_test: bool) -> float:
    """Tasks of the pool finished per second over the last ``THROUGHPUT_WINDOW`` (one indexed
    read per pool every ``THROUGHPUT_REFRESH_SECONDS`` per process)."""
    now = time.monotonic()
    cached = _throughput.get((mode, is_test))
    if cached is not None and now - cached[0] < THROUGHPUT_REFRESH_SECONDS:
        return cached[1]
    finished = Task.objects.filter(
        finished_at__gte=timezone.now() - THROUGHPUT_WINDOW,
        mode=mode,
        is_test=is_test,
        status__in=TERMINAL_STATUSES,
        started_at__isnull=False,
    ).count()
    rate = finished / THROUGHPUT_WINDOW.total_seconds()
    _throughput[(mode, is_test)] = (now, rate)
    return rate


def pool_throughput_forget() -> None:
    """Forget the measured throughputs and pool sizes of this process (tests)."""
    _throughput.clear()
    _capacity.clear()


def _pool_free_slots(task: Task) -> int:
    """Free slots of the accounts that may take ``task`` (one read: accounts with their
    running counts). Follow-ups go to their parent's account where its engine needs that."""
    now = timezone.now()
    if task.is_test:
        sandbox_pool_ensure()  # test keys need no configuration: their pool always exists
    accounts = list(
        UpstreamAccount.objects.filter(is_enabled=True, is_sandbox_pool=task.is_test)
        .annotate(busy=Count("tasks", filter=Q(tasks__status__in=ACTIVE_STATUSES)))
        .order_by("pk")
    )
    accounts = [
        a
        for a in accounts
        if upstream_account_usable(a, now=now)
        and a.serves(task.mode)
        and upstream_account_takes(
            a, organization_id=task.organization_id, pool=task.pool, is_test=task.is_test
        )
    ]
    parent = task.parent if task.parent_id else None
    if parent is not None and parent.upstream_account_id:
        same = [a for a in accounts if a.pk == parent.upstream_account_id]
        engine = engine_named(parent.engine or "sandbox")
        if same or engine is None or engine.follow_ups_need_parent_account:
            accounts = same
        else:
            accounts = [a for a in accounts if a.engine == parent.engine] or accounts
    return sum(max(0, a.concurrency - a.busy) for a in accounts)


#: A pool's total slots are re-read this often (only to skip the free-slot read for a task
#: placed behind more tasks than the pool has slots: all of them are busy then).
CAPACITY_REFRESH_SECONDS = 5.0
_capacity: dict[tuple[str, bool], tuple[float, int]] = {}


def _pool_capacity(*, mode: str, is_test: bool) -> int:
    now = time.monotonic()
    cached = _capacity.get((mode, is_test))
    if cached is not None and now - cached[0] < CAPACITY_REFRESH_SECONDS:
        return cached[1]
    total = sum(
        concurrency
        for modes, concurrency in UpstreamAccount.objects.filter(
            is_enabled=True, is_sandbox_pool=is_test
        ).values_list("modes", "concurrency")
        if mode in (modes or [])
    )
    _capacity[(mode, is_test)] = (now, total)
    return total


def queue_head_query(*, mode: str, is_test: bool) -> QuerySet[Task, Any]:
    """The smallest queue number still waiting in a pool, as a one-row query (partial index
    ``task_queue_head``: one index probe whatever the queue's length). The acceptance reads
    it in its organization-lock statement."""
    return (
        Task.objects.filter(
            status=Status.NOT_START, mode=mode, is_test=is_test, queue_seq__isnull=False
        )
        .order_by("queue_seq")
        .values("queue_seq")[:1]
    )


class _Unread:
    pass


UNREAD = _Unread()


def task_queue_estimate(*, task: Task, head: int | _Unread | None = UNREAD) -> QueueEstimate:
    """Where the queued ``task`` stands in its pool (its mode, live or test).

    Its place in the pool's queue is its queue number minus the head's (numbers come from one
    sequence per pool at acceptance), so no COUNT of the queue runs; tasks that left the queue
    out of order (cancelled, or served earlier for fairness) make it an upper bound. ``head``
    is the head as the caller read it (the acceptance, under its lock; None: the queue was
    empty). The first ``free`` places start now; a place behind more tasks than the pool has
    slots means every slot is busy, and the free slots are not read.
    """
    if task.status != Status.NOT_START or task.submitted_at is None:
        return QueueEstimate(0)
    if task.pool == Pool.OWN:
        # Hook for bring-your-own accounts: only the organization's own accounts serve an
        # own-only task, so its line is the organization's own queue, not the pool's.
        place = task_own_queue_position(task=task)
    elif task.queue_seq is None:
        place = task_queue_position(task=task)  # SQLite, or a task queued before numbering
    else:
        if isinstance(head, _Unread):
            row = queue_head_query(mode=task.mode, is_test=task.is_test).first()
            head = row["queue_seq"] if row else None
        place = max(1, task.queue_seq - head + 1) if head is not None else 1
    capacity = _pool_capacity(mode=task.mode, is_test=task.is_test)
    # A pool just configured may not be in the remembered size yet: 0 is always re-read.
    busy = 0 < capacity < place and not task.is_test
    free = 0 if busy else _pool_free_slots(task)
    if place <= free:
        return QueueEstimate(0)
    waiting = place - free
    rate = pool_throughput(mode=task.mode, is_test=task.is_test)
    expected = timezone.now() + timedelta(seconds=waiting / rate) if rate > 0 else None
    return QueueEstimate(waiting, expected)


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
