"""Fixed statements of the task pipeline's hot path (issue 15, P2): built once per process from
the models' metadata, run with parameters, their rows turned into model instances.

A task's start, its poll step and a dispatch pass each run a handful of statements that take
0.1-0.3 ms in PostgreSQL; building them in the ORM cost several times that in the worker, per
task, on the two cores the whole pipeline shares. The statements here say the same as the
querysets they replaced (compare-and-set conditions included), and the column lists and
converters come from the models, so they follow schema changes. PostgreSQL only: callers keep
the ORM path for other databases (the embedded run on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from django.db import connection, models

from apps.core.db import (
    RELAXED_COMMIT,
    RELAXED_COMMIT_CONDITION,
    prepared_cursor,
    relaxed_commit_wanted,
)
from apps.engines.models import UpstreamAccount
from apps.webhooks.models import WebhookEndpoint

from .models import Task

M = TypeVar("M", bound=models.Model)


def fixed_sql() -> bool:
    """Whether the hand-built statements apply (PostgreSQL)."""
    return connection.vendor == "postgresql"


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


class Rows(Generic[M]):
    """Some or all concrete columns of ``model``, selected under an alias, and the instances
    made from them (Django's converters applied, as the ORM would)."""

    def __init__(self, model: type[M], *, only: Sequence[str] | None = None) -> None:
        self.model = model
        self._only = only
        self._prepared: tuple[list[str], list[Any], list[Any], list[str]] | None = None
        self._converted: list[tuple[int, Any, Any]] | None = None

    def _prepare(self) -> tuple[list[str], list[Any], list[Any], list[str]]:
        if self._prepared is None:
            fields = [
                f
                for f in self.model._meta.concrete_fields
                if self._only is None or f.attname in self._only or f.name in self._only
            ]
            table = self.model._meta.db_table
            expressions = [f.get_col(table) for f in fields]
            converters = [
                connection.ops.get_db_converters(e) + e.get_db_converters(connection)
                for e in expressions
            ]
            self._prepared = (
                [f.attname for f in fields],
                converters,
                expressions,
                [str(f.column) for f in fields],
            )
        return self._prepared

    @property
    def width(self) -> int:
        return len(self._prepare()[0])

    def columns(self, alias: str) -> str:
        """The select list, ``alias.column`` each."""
        return ", ".join(f"{alias}.{quote(column)}" for column in self._prepare()[3])

    def make(self, values: Sequence[Any]) -> M:
        names, converters, expressions, _ = self._prepare()
        row = list(values)
        if self._converted is None:
            self._converted = [
                (index, chain, expressions[index])
                for index, chain in enumerate(converters)
                if chain
            ]
        for index, chain, expression in self._converted:
            for convert in chain:
                row[index] = convert(row[index], expression, connection)
        return self.model.from_db(connection.alias, names, row)


TASK = Rows(Task)
ACCOUNT = Rows(UpstreamAccount)
#: An account as a dispatch pass reads it: what choosing a slot needs (not its encrypted
#: secrets, nor its counters, which change with every job).
ACCOUNT_CHOOSING = Rows(
    UpstreamAccount,
    only=[
        "id",
        "updated_at",
        "name",
        "owner_id",
        "engine",
        "modes",
        "concurrency",
        "run_timeout_seconds",
        "is_enabled",
        "is_sandbox_pool",
        "health",
        "cooldown_until",
        "options",
    ],
)
#: What choosing a slot reads of a queued task and of its parent.
CHOOSING = Rows(
    Task, only=["id", "organization_id", "mode", "is_test", "submitted_at", "pool", "parent_id"]
)
CHOOSING_PARENT = Rows(Task, only=["id", "upstream_account_id", "engine"])


def tasks_table() -> str:
    return quote(Task._meta.db_table)


def accounts_table() -> str:
    return quote(UpstreamAccount._meta.db_table)


def endpoints_table() -> str:
    return quote(WebhookEndpoint._meta.db_table)


def has_endpoints_sql(alias: str) -> str:
    """A boolean column: whether the task's organization has an enabled webhook endpoint (what
    ``events.task_changed`` would read in a statement of its own)."""
    return (
        f"EXISTS (SELECT 1 FROM {endpoints_table()} e WHERE e.organization_id = "  # noqa: S608
        f"{alias}.organization_id AND e.is_enabled)"
    )


_SQL: dict[str, str] = {}


def _with_relations(source: str) -> str:
    """A task of ``source`` (a table or a CTE) with its account and its parent (LEFT JOINs),
    by a ``WHERE`` on ``t`` appended by the caller."""
    tasks, accounts = tasks_table(), accounts_table()
    return (
        f"SELECT {TASK.columns('t')}, {ACCOUNT.columns('a')}, {TASK.columns('p')} "  # noqa: S608
        f"FROM {source} t LEFT JOIN {accounts} a ON a.id = t.upstream_account_id "
        f"LEFT JOIN {tasks} p ON p.id = t.parent_id "
    )


def _sql(name: str) -> str:
    """The statement called ``name``, built on first use."""
    found = _SQL.get(name)
    if found is None:
        found = _SQL[name] = _BUILDERS[name]()
        return found
    return found


def _build_step() -> str:
    return _with_relations(tasks_table()) + "WHERE t.id = %s"


def _build_claim() -> str:
    # ``task_start``'s claim: the compare-and-set and the read of what the submit needs.
    return (
        f"WITH claimed AS (UPDATE {tasks_table()} SET submit_claimed_at = %s, "  # noqa: S608
        "lease_expires_at = %s, updated_at = %s WHERE id = %s AND status = 'SUBMITTED' "
        "AND submit_claimed_at IS NULL RETURNING *) " + _with_relations("claimed")
    )


def _build_running(seed: bool) -> str:
    # ``task_start``'s move to IN_PROGRESS (the same compare-and-set on the claim), the
    # account's counters, and the row read back with whether its tenant has an endpoint.
    seed_set = ", seed = %s" if seed else ""
    return (
        f"WITH moved AS (UPDATE {tasks_table()} SET status = 'IN_PROGRESS', "  # noqa: S608
        "upstream_job_id = %s, engine_state = %s, started_at = %s, progress = 0, "
        "poll_token = %s, slot_freed_at = NULL, lease_expires_at = %s, updated_at = %s"
        f"{seed_set} WHERE id = %s AND status = 'SUBMITTED' AND submit_claimed_at = %s "
        f"RETURNING *), counted AS (UPDATE {accounts_table()} a SET "
        "total_submitted = a.total_submitted + 1, last_used_at = %s FROM moved "
        f"WHERE a.id = %s) SELECT {TASK.columns('moved')}, {has_endpoints_sql('moved')} "
        "FROM moved"
    )


def _build_release(relaxed: bool = False) -> str:
    head = RELAXED_COMMIT if relaxed else ""
    tail = f" AND {RELAXED_COMMIT_CONDITION}" if relaxed else ""
    return (
        f"{head}UPDATE {tasks_table()} SET slot_freed_at = %s, lease_expires_at = %s, "  # noqa: S608
        "updated_at = %s WHERE id = %s AND status = 'IN_PROGRESS' AND poll_token = %s "
        f"AND slot_freed_at IS NULL{tail}"
    )


def _build_enabled() -> str:
    # The enabled accounts, and a row (NULL, NULL) when test tasks are queued while no sandbox
    # pool is enabled (the pass then makes the built-in one).
    accounts = accounts_table()
    return (
        f"SELECT id, is_sandbox_pool FROM {accounts} WHERE is_enabled UNION ALL "  # noqa: S608
        f"(SELECT NULL, NULL FROM {tasks_table()} WHERE status = 'NOT_START' AND is_test "
        f"AND NOT EXISTS (SELECT 1 FROM {accounts} WHERE is_enabled AND is_sandbox_pool) "
        "LIMIT 1)"
    )


def _build_lock_accounts(one: bool = False, relaxed: bool = False) -> str:
    # The enabled accounts no other pass holds (or the one given), locked; ``relaxed``: the
    # pass's commit does not wait for the disk (apps/core/db.py, "relaxed commits").
    head = RELAXED_COMMIT if relaxed else ""
    condition = f"AND {RELAXED_COMMIT_CONDITION} " if relaxed else ""
    return (
        f"{head}SELECT {ACCOUNT_CHOOSING.columns('a')} FROM {accounts_table()} a "  # noqa: S608
        f"WHERE a.is_enabled {'AND a.id = %s ' if one else ''}{condition}"
        "ORDER BY a.id FOR UPDATE OF a SKIP LOCKED"
    )


def _build_holding() -> str:
    # Tasks holding a slot of each given account. A statement of its own, after the lock: in
    # the locking statement its snapshot could predate the commit of the pass that held the
    # lock just before, whose assignments it would then not count (and overfill the account).
    return (
        f"SELECT upstream_account_id, count(*) FROM {tasks_table()} "  # noqa: S608
        "WHERE upstream_account_id = ANY(%s) AND status IN ('SUBMITTED', 'IN_PROGRESS') "
        "AND slot_freed_at IS NULL GROUP BY upstream_account_id"
    )


def _build_lock_queued() -> str:
    return (
        f"SELECT {CHOOSING.columns('t')}, {CHOOSING_PARENT.columns('p')} "  # noqa: S608
        f"FROM {tasks_table()} t LEFT JOIN {tasks_table()} p ON p.id = t.parent_id "
        "WHERE t.id = ANY(%s) AND t.status = 'NOT_START' FOR UPDATE OF t SKIP LOCKED"
    )


def _build_assign() -> str:
    # Every assignment of a pass: account, engine and run deadline per task.
    return (
        f"UPDATE {tasks_table()} t SET status = 'SUBMITTED', "  # noqa: S608
        "upstream_account_id = v.account, engine = v.engine, submit_claimed_at = NULL, "
        "lease_expires_at = %s, run_deadline = v.deadline, updated_at = %s "
        "FROM unnest(%s::varchar[], %s::bigint[], %s::varchar[], %s::timestamptz[]) "
        "AS v(id, account, engine, deadline) "
        "WHERE t.id = v.id AND t.status = 'NOT_START' "
        f"RETURNING {TASK.columns('t')}, {has_endpoints_sql('t')}"
    )


_BUILDERS = {
    "step": _build_step,
    "claim": _build_claim,
    "running": lambda: _build_running(False),
    "running_seed": lambda: _build_running(True),
    "release": _build_release,
    "release_relaxed": lambda: _build_release(relaxed=True),
    "enabled": _build_enabled,
    "lock_accounts": _build_lock_accounts,
    "lock_account": lambda: _build_lock_accounts(one=True),
    "lock_accounts_relaxed": lambda: _build_lock_accounts(relaxed=True),
    "lock_account_relaxed": lambda: _build_lock_accounts(one=True, relaxed=True),
    "holding": _build_holding,
    "lock_queued": _build_lock_queued,
    "assign": _build_assign,
}


def task_with_relations(row: Sequence[Any]) -> Task:
    """A task made from a row of ``_step_sql``'s columns, its account and parent attached."""
    width, account_width = TASK.width, ACCOUNT.width
    task = TASK.make(row[:width])
    account_row = row[width : width + account_width]
    parent_row = row[width + account_width :]
    if account_row[0] is not None:
        task.upstream_account = ACCOUNT.make(account_row)
    if parent_row[0] is not None:
        task.parent = TASK.make(parent_row)
    return task


def task_for_step(task_id: str) -> Task | None:
    """The task with its account and parent (``select_related`` of both), or None."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql("step"), [task_id])
        row = cursor.fetchone()
    return task_with_relations(row) if row is not None else None


def task_claim_submit(task_id: str, *, now: Any, lease: Any) -> Task | None:
    """Claim an assigned task's submit (``submit_claimed_at``, at most once) and read it with
    its account and parent, in one statement. None when it was not ours to claim."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql("claim"), [now, lease, now, task_id])
        row = cursor.fetchone()
    return task_with_relations(row) if row is not None else None


_ENGINE_STATE = Task._meta.get_field("engine_state")


def task_mark_running(
    task: Task,
    *,
    upstream_job_id: str,
    engine_state: dict[str, Any],
    token: str,
    now: Any,
    lease: Any,
    account_id: int,
    seed: Any = ...,
) -> tuple[Task, bool] | None:
    """``task`` (claimed by this worker at ``task.submit_claimed_at``) is running upstream: its
    move to IN_PROGRESS and the account's counters, in one statement. The row as written and
    whether its organization has an enabled webhook endpoint; None if the claim was lost."""
    state = _ENGINE_STATE.get_db_prep_save(engine_state, connection)
    params: list[Any] = [upstream_job_id, state, now, token, lease, now]
    if seed is not ...:
        params.append(seed)
    params += [task.pk, task.submit_claimed_at, now, account_id]
    with prepared_cursor() as cursor:
        cursor.execute(_sql("running" if seed is ... else "running_seed"), params)
        row = cursor.fetchone()
    if row is None:
        return None
    return TASK.make(row[:-1]), bool(row[-1])


def task_release_slot(task_id: str, token: str, *, now: Any, lease: Any) -> bool:
    """The compare-and-set that frees a finished job's slot (``lifecycle._slot_release``).

    Its own transaction, committed without waiting for the disk (a crash of PostgreSQL that
    lost it leaves the slot held until the sweeper polls the job again)."""
    relaxed = relaxed_commit_wanted(outermost=not connection.in_atomic_block)
    with prepared_cursor() as cursor:
        cursor.execute(
            _sql("release_relaxed" if relaxed else "release"), [now, lease, now, task_id, token]
        )
        return cursor.rowcount > 0


def accounts_enabled() -> tuple[dict[int, bool], bool]:
    """Every enabled account (whether it is the sandbox pool), and whether test tasks are
    queued while no sandbox pool is enabled."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql("enabled"))
        found = cursor.fetchall()
    enabled = {pk: bool(sandbox) for pk, sandbox in found if pk is not None}
    return enabled, len(enabled) < len(found)


def accounts_lock_free(
    account_id: int | None = None, *, relaxed: bool = False
) -> list[UpstreamAccount]:
    """The enabled accounts no other dispatcher holds (only ``account_id``, if given), locked
    (``SKIP LOCKED``), by id, with what choosing a slot reads of them. ``relaxed``: the first
    statement of a pass in a transaction of its own, whose commit then does not wait for the
    disk (an assignment lost with a crash of PostgreSQL is made again; no upstream saw it)."""
    relaxed = relaxed and relaxed_commit_wanted(outermost=True)
    suffix = "_relaxed" if relaxed else ""
    with prepared_cursor() as cursor:
        if account_id is None:
            cursor.execute(_sql("lock_accounts" + suffix))
        else:
            cursor.execute(_sql("lock_account" + suffix), [account_id])
        found = cursor.fetchall()
    accounts = []
    for row in found:
        values = tuple(row)
        # An account unchanged since the last pass of this process is that pass's instance
        # (a pass reads every enabled account; making each anew was most of its Python).
        known = _accounts_seen.get(values[0])
        if known is None or known[0] != values:
            known = _accounts_seen[values[0]] = (values, ACCOUNT_CHOOSING.make(values))
        accounts.append(known[1])
    return accounts


def accounts_holding(ids: list[int]) -> dict[int, int]:
    """How many tasks hold a slot of each of the accounts ``ids`` (call after locking them)."""
    with prepared_cursor() as cursor:
        cursor.execute(_sql("holding"), [ids])
        return {pk: int(n) for pk, n in cursor.fetchall()}


#: The accounts the last passes of this process read: id -> (their row, the instance).
_accounts_seen: dict[int, tuple[tuple[Any, ...], UpstreamAccount]] = {}


def tasks_lock_queued(ids: list[str]) -> list[Task]:
    """Those of ``ids`` still queued, locked (``SKIP LOCKED``), with what choosing a slot reads
    of them and of their parents."""
    width = CHOOSING.width
    with prepared_cursor() as cursor:
        cursor.execute(_sql("lock_queued"), [ids])
        found = cursor.fetchall()
    tasks = []
    for row in found:
        task = CHOOSING.make(row[:width])
        if row[width] is not None:
            task.parent = CHOOSING_PARENT.make(row[width:])
        elif task.parent_id is None:
            task.parent = None
        tasks.append(task)
    return tasks


def tasks_assign(
    rows: list[tuple[str, int, str, Any]], *, lease: Any, now: Any
) -> list[tuple[Task, bool]]:
    """Assign queued tasks, locked by the caller, to accounts: ``rows`` of (task id, account
    id, engine, run deadline), one statement. The rows as written, each with whether its
    organization has an enabled webhook endpoint."""
    with prepared_cursor() as cursor:
        cursor.execute(
            _sql("assign"),
            [
                lease,
                now,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ],
        )
        found = cursor.fetchall()
    return [(TASK.make(row[:-1]), bool(row[-1])) for row in found]
