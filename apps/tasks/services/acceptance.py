"""Accepting a task: the tier limit, the price and the hold, in the caller's transaction.

What must be exact under concurrency — the tier limit and the balance — runs inside one
transaction that locks the organization row, so 200 simultaneous submits on a FREE
organization accept exactly 3. A rejected submit creates no task, stores no file and moves no
token.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models, transaction
from django.utils import timezone

from apps.accounts.models import MembershipTier, Organization
from apps.billing.ledger import ledger_hold, ledger_hold_arguments
from apps.billing.selectors import own_account_fee_get, price_get
from apps.core.db import prepared_cursor
from apps.core.errors import ConcurrencyLimitReached
from apps.engines.own_selectors import own_modes_served

from ..actions import action_spec
from ..enums import Pool, Status
from ..errors import FIELD, InputError
from ..events import task_changed
from ..lifecycle import kick_dispatcher
from ..models import Task, TenantQueueCounter
from ..selectors import UNREAD, task_queue_estimate
from .inputs import discard_files
from .pricekeys import price_key_for

logger = logging.getLogger(__name__)

SEED_LIMIT = 4_294_967_295
_MISSING = object()

#: The queue head each accepted task saw under the organization lock, until its answer is
#: made (weak: a task whose transaction failed leaves nothing behind).
queue_heads: weakref.WeakKeyDictionary[Task, Any] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SubmitOutcome:
    """What the protocols report: started (code 1), queued (22) or waiting for input (21)."""

    task: Task
    result: str
    queue_position: int = 0
    #: When a queued task is expected to start (None: no throughput measured yet).
    expected_start: datetime | None = None

    STARTED = "started"
    QUEUED = "queued"
    MODAL = "modal"


def new_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


@dataclass(frozen=True)
class _Locked:
    """What the acceptance reads with the organization's row lock."""

    unfinished: int
    limit: int
    tier_name: str
    tier_code: str
    tenant_seq: int | None = None


@functools.cache
def _lock_sql() -> str:
    """The lock statement, built once per process from the models' tables (no SQL is built
    per request): the organization's counter and tier, and the task's number in the tenant's
    part of the pool's queue (the tenant's counter, bumped).

    Nothing else the lock orders: under READ COMMITTED a statement reads with the snapshot it
    took before it waited for the row lock. So not whether a webhook endpoint listens (a submit
    queued behind ``endpoint_create``, which holds the same lock, would read the new endpoint
    as missing and write it no ``task.created``; ``task_changed`` reads the endpoints after the
    lock), nor the tenant's queue head (a submit queued behind another submit of the tenant
    would miss that one's task and count itself first in line: ``_queue_head_sql``, after the
    lock). The counter's upsert is no such read: it updates the row's latest version."""
    org = Organization._meta.db_table
    tier = MembershipTier._meta.db_table
    counters = TenantQueueCounter._meta.db_table
    # NO KEY UPDATE serialises the submits of one organization without blocking the KEY SHARE
    # lock the ledger (and every foreign key insert) takes on the same row; ``OF o`` keeps the
    # shared tier row unlocked, or every FREE organization would queue behind one another.
    # The counter's upsert waits for a concurrent submit of the same tenant to commit (as the
    # organization's row lock does), so numbers are never given twice; a refused submit rolls
    # its bump back with everything else.
    return f"""
        WITH counter AS (
            INSERT INTO {counters} (organization_id, mode, is_test, last)
            VALUES (%(organization)s, %(mode)s, %(is_test)s, 1)
            ON CONFLICT (organization_id, mode, is_test)
            DO UPDATE SET last = {counters}.last + 1
            RETURNING last
        )
        SELECT o.unfinished_tasks, t.max_unfinished_tasks, t.name, t.code,
               (SELECT last FROM counter)
        FROM {org} o JOIN {tier} t ON t.id = o.tier_id
        WHERE o.id = %(organization)s
        FOR NO KEY UPDATE OF o
    """  # noqa: S608 - table names are ours, every value a parameter


@functools.cache
def _queue_head_sql() -> str:
    """The tenant's queue head in the task's pool: its smallest queued number (partial index
    ``task_tenant_queued``), in a statement of its own after the lock statement, so that its
    snapshot includes what the submit it waited for committed (``tasks_task_accept`` reads it
    in a later statement of its own likewise). The queued status is a literal, not a
    parameter: the statement is prepared, and a generic plan can use the partial index
    (``status = 'NOT_START'``) only when the predicate is written in the statement; with a
    parameter it read every queued row of the tenant, and submits slowed as the tenant's queue
    grew."""
    tasks = Task._meta.db_table
    queued = Status.NOT_START
    return f"""
        SELECT q.tenant_seq FROM {tasks} q
        WHERE q.status = '{queued}' AND q.mode = %(mode)s AND q.is_test = %(is_test)s
          AND q.organization_id = %(organization)s AND q.tenant_seq IS NOT NULL
        ORDER BY q.tenant_seq LIMIT 1
    """  # noqa: S608 - the table name and the status literal are ours, every value a parameter


def _queue_head(task: Task) -> Any:
    """``_queue_head_sql`` for ``task`` (None: no queued task of its tenant in the pool);
    elsewhere than PostgreSQL ``UNREAD``, which the estimate reads itself."""
    if connection.vendor != "postgresql":
        return UNREAD
    with prepared_cursor() as cursor:
        cursor.execute(
            _queue_head_sql(),
            {"mode": task.mode, "is_test": task.is_test, "organization": task.organization_id},
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def _lock_organization(task: Task) -> _Locked:
    if connection.vendor != "postgresql":
        organization = (
            Organization.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tier")
            .get(pk=task.organization_id)
        )
        tier = organization.tier
        counter, _ = TenantQueueCounter.objects.select_for_update().get_or_create(
            organization_id=task.organization_id, mode=task.mode, is_test=task.is_test
        )
        counter.last += 1
        counter.save(update_fields=["last"])
        return _Locked(
            organization.unfinished_tasks,
            tier.max_unfinished_tasks,
            tier.name,
            tier.code,
            tenant_seq=counter.last,
        )
    with prepared_cursor() as cursor:
        cursor.execute(
            _lock_sql(),
            {
                "mode": task.mode,
                "is_test": task.is_test,
                "organization": task.organization_id,
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise Organization.DoesNotExist("The task's organization does not exist.")
    unfinished, limit, name, code, tenant_seq = row
    return _Locked(unfinished, limit, name, code, tenant_seq)


def accept_lock(task: Task) -> _Locked:
    """Inside the caller's transaction: ``accept``'s lock of the organization (and ``task``'s
    number in its tenant's queue), for a caller that must take it before locking other rows —
    the ledger's order is the organization's row, then task rows, then the balance
    (``press.task_submit_modal`` locks the MODAL task it accepts). Pass it to ``accept``."""
    return _lock_organization(task)


def accept(task: Task, *, now: datetime, locked: _Locked | None = None) -> None:
    """Inside the caller's transaction: tier limit and price. Locks the organization, unless
    the caller did already in this transaction (``locked``, from ``accept_lock``)."""
    if locked is None:
        locked = _lock_organization(task)
    task.tenant_seq = locked.tenant_seq
    # Kept in step by the task table's trigger in every transaction that inserts a task or
    # changes its status; read here under the row lock, so it is exact (no COUNT).
    _limit_reached(
        unfinished=locked.unfinished,
        limit=locked.limit,
        tier_name=locked.tier_name,
        tier_code=locked.tier_code,
    )
    if task.pool == Pool.OWN:
        _check_own_served(task)
    else:
        # Read once the tier limit let the task in (a refused submit pays no statement for
        # it); an own-only task's place is its organization's own line, which needs no head.
        queue_heads[task] = _queue_head(task)
    _price(task, now=now)


def _check_own_served(task: Task) -> None:
    """An ``own`` task needs an own account of its organization set to serve its mode, read
    under the organization's lock: ``resolve_pool`` checked before it (without the lock), and
    removing the last such account (``own_services``) takes the same lock and fails the
    queued ones, so a task accepted in between would wait for its start deadline for nothing.
    A switched-off account still counts (it may be switched on again), as it does there."""
    if task.mode in own_modes_served(organization_id=task.organization_id):
        return
    raise InputError(
        f"This task may run only on your organization's own upstream accounts ({FIELD} own, "
        f"or a follow-up of a task one of them ran), but none of them serves {task.mode} mode "
        f"any more; add one, or use own_then_shared or the shared pool.",
        field="pool",
        code="no_own_account",
        details={"pool": Pool.OWN, "mode": task.mode},
    )


def _limit_reached(*, unfinished: int, limit: int, tier_name: str, tier_code: str) -> None:
    if unfinished >= limit:
        raise ConcurrencyLimitReached(
            f"Your {tier_name} plan allows {limit} unfinished tasks at once; "
            f"wait for one to finish or upgrade your plan.",
            details={"limit": limit, "unfinished": unfinished, "tier": tier_code},
        )


def _price(task: Task, *, now: datetime) -> None:
    """The task's price (and own-account fee) and its acceptance times; reads no locked row."""
    spec = action_spec(task.action)
    # The row of the task's price key: its action's, or a variant's (draft mode) priced on its own.
    key = price_key_for(task)
    base = 0 if task.is_test else price_get(action=key, mode=task.mode)
    task.price = spec.price_for(base, task.params or {})
    task.own_fee = None
    if not task.is_test and task.pool != Pool.SHARED:
        # Own accounts: the platform fee. ``own`` holds just the fee; ``own_then_shared``
        # holds the price (a shared account may run it) and the capture charges the fee when
        # its own account did (``lifecycle._settle``).
        task.own_fee = spec.price_for(
            own_account_fee_get(action=key, mode=task.mode), task.params or {}
        )
        if task.pool == Pool.OWN:
            task.price = task.own_fee
    task.submitted_at = now
    task.start_deadline = now + settings.TASK_START_DEADLINE


#: Field classes (exactly these, not subclasses) whose preparation for the database returns a
#: value of the given type unchanged.
_PLAIN_TYPES: dict[type[Any], type[Any]] = {
    models.CharField: str,
    models.TextField: str,
    models.URLField: str,
    models.BooleanField: bool,
    models.SmallIntegerField: int,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
}


def _plain_type(field: Any) -> type[Any] | None:
    """The type whose values of ``field`` need no preparation (None: always prepare)."""
    if isinstance(field, models.ForeignKey):
        return _plain_type(field.target_field)
    if isinstance(field, models.AutoField | models.BigAutoField):
        return int
    return _PLAIN_TYPES.get(type(field))


@functools.cache
def _insert_sql() -> tuple[str, tuple[Any, ...], tuple[tuple[str, type[Any] | None], ...]]:
    fields = tuple(Task._meta.concrete_fields)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    values = ", ".join(["%s"] * len(fields))
    table = quote(Task._meta.db_table)
    plain = tuple((str(f.attname), _plain_type(f)) for f in fields)
    return f"INSERT INTO {table} ({columns}) VALUES ({values})", fields, plain  # noqa: S608


def _insert(task: Task) -> None:
    """``task.save(force_insert=True)`` without building the INSERT per request (the task
    model has no save signals). A plain value (``str`` or a text choice, ``int``, ``bool``,
    None) of a field whose preparation returns it unchanged goes as it is; every other value (JSON, times, the
    ``auto_now`` stamps) through its field's own preparation."""
    if connection.vendor != "postgresql":
        task.save(force_insert=True)
        return
    sql = _insert_sql()[0]
    values = _row_values(task)
    with prepared_cursor() as cursor:
        cursor.execute(sql, values)
    task._state.adding = False
    task._state.db = connection.alias


def _row_values(task: Task, *, as_json: bool = False) -> list[Any]:
    """The INSERT's values of ``task``, in ``_insert_sql``'s column order.

    A plain value (``str`` or a text choice, ``int``, ``bool``, None) of a field whose
    preparation returns it unchanged goes as it is; every other value (JSON, times, the
    ``auto_now`` stamps) through its field's own preparation. ``as_json``: as
    ``jsonb_populate_record`` reads each into its column (times as ISO text, JSON as itself).
    """
    _, fields, plain = _insert_sql()
    json_as_is = _json_as_is()
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: no proxy per attribute read
    values = []
    attributes = task.__dict__
    for field, (attname, plain_type) in zip(fields, plain, strict=True):
        value = attributes.get(attname, _MISSING)
        if plain_type is not None and (
            value is None
            or type(value) is plain_type
            or (plain_type is str and isinstance(value, str))  # TextChoices: CharField keeps it
        ):
            values.append(value)
            continue
        kind = json_as_is.get(attname) if as_json else None
        if kind is not None:
            # What the field's own preparation gives, without the calls: a JSON field's value
            # itself (the Jsonb wrapper is unwrapped for the row anyway), an aware time of a
            # field that stamps nothing as its ISO text. Anything else takes the full path.
            if kind == "json" and type(value) in _JSON_AS_IS:
                values.append(value)
                continue
            if kind == "time" and (
                value is None or (type(value) is datetime and value.tzinfo is not None)
            ):
                values.append(None if value is None else value.isoformat())
                continue
        value = field.get_db_prep_save(field.pre_save(task, True), db)
        if as_json:
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(field, models.JSONField):
                value = getattr(value, "obj", value)  # psycopg's Jsonb wrapper: the value itself
        values.append(value)
    return values


#: Types a JSON field's value may have to go into the row as it is.
_JSON_AS_IS = (dict, list, str, int, float, bool, type(None))


@functools.cache
def _json_as_is() -> dict[str, str]:
    """Fields whose value :func:`_row_values` puts into the JSON row without the field's
    preparation: ``json`` (a JSONField with no encoder of its own), ``time`` (a DateTimeField
    that stamps nothing on save: its value is what it holds)."""
    kinds = {}
    for field in _insert_sql()[1]:
        if type(field) is models.JSONField and field.encoder is None:
            kinds[str(field.attname)] = "json"
        elif type(field) is models.DateTimeField and not (field.auto_now or field.auto_now_add):
            kinds[str(field.attname)] = "time"
    return kinds


#: What ``json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`` uses,
#: made once (``dumps`` builds an encoder per call when given any option).
_ROW_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _row_json(task: Task) -> str:
    """``task``'s row as a JSON object of column → value, every concrete column."""
    row = dict(zip(_columns(), _row_values(task, as_json=True), strict=True))
    return _ROW_ENCODER.encode(row)


@functools.cache
def _columns() -> tuple[str, ...]:
    return tuple(str(field.column) for field in _insert_sql()[1])


#: The submit's acceptance in one statement (migration ``tasks.0018``): lock, tier limit,
#: queue number and head, INSERT and the ledger's hold.
_ACCEPT_SQL = (
    "SELECT outcome, unfinished, max_unfinished, tier_name, tier_code, seq, queue_head,"
    " has_endpoints FROM tasks_task_accept(%(row)s::jsonb, %(alone)s, %(hold)s,"
    " %(hold_amount)s, %(hold_key)s, %(hold_kind)s, %(low_threshold)s, %(now)s)"
)
#: SQLSTATE of ``tasks_task_accept`` when the hold moved nothing or crossed the low threshold.
HOLD_REFUSED = "MJ001"


def _alone_possible(task: Task) -> bool:
    """Whether ``task`` may be accepted in one statement outside a transaction: PostgreSQL, no
    transaction open (the statement is its own), and no outbox row to write with it (the task's
    own hook; an organization's endpoints are checked by the statement itself), and not an
    ``own`` task (``accept`` checks its organization still has an own account for its mode
    under the lock, which the statement cannot)."""
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: no lookup per attribute read
    return (
        db.vendor == "postgresql"
        and not db.in_atomic_block
        and not task.notify_hook
        and task.pool != Pool.OWN
        and db.get_autocommit()
    )


def _accept_alone(task: Task, *, now: datetime) -> bool:
    """Accept and insert ``task`` and hold its price in one statement, its own transaction:
    one round trip instead of BEGIN, the lock statement, INSERT, the hold and COMMIT.

    False (nothing written) when the transaction path must do it: the organization has a
    webhook endpoint (the outbox row goes in the accepting transaction), or the hold moved
    nothing or crossed the low-balance threshold (the ledger answers those exactly). Raises
    ``ConcurrencyLimitReached`` as ``accept`` does."""
    _price(task, now=now)
    hold = not task.is_test
    arguments: dict[str, Any] = {
        "row": _row_json(task),
        "alone": True,
        "hold": hold,
        "now": now,
        "hold_amount": 0,
        "hold_key": "",
        "hold_kind": "",
        "low_threshold": 0,
    }
    if hold:
        arguments.update(ledger_hold_arguments(task=task, amount=task.price))
    try:
        with prepared_cursor() as cursor:
            cursor.execute(_ACCEPT_SQL, arguments)
            row = cursor.fetchone()
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == HOLD_REFUSED:
            return False
        raise
    outcome, unfinished, limit, tier_name, tier_code, seq, head, _ = row
    if outcome == "missing":
        raise Organization.DoesNotExist("The task's organization does not exist.")
    if outcome == "endpoints":
        return False
    if outcome == "limit":
        _limit_reached(unfinished=unfinished, limit=limit, tier_name=tier_name, tier_code=tier_code)
    task.tenant_seq = seq
    task._state.adding = False
    task._state.db = DEFAULT_DB_ALIAS  # ``connection``'s alias
    queue_heads[task] = head
    # Committed already. ``task.created`` has no receiver (no hook of its own, no endpoint:
    # checked above), so ``task_changed`` would write no outbox row; it is not called, which
    # spares its transaction block.
    kick_dispatcher()  # no transaction: kicks now
    return True


def insert_accepted(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: accept ``task``, insert it, hold its price."""
    accept(task, now=now)
    _insert(task)
    if not task.is_test:
        ledger_hold(task=task, amount=task.price)
    task_changed(
        task=task,
        event_type="task.created",
        inserted=True,
    )
    kick_dispatcher()


def finish_acceptance(task: Task) -> SubmitOutcome:
    """After commit: answer "started" (code 1) or the queue position (code 22).

    The request does no dispatching: ``insert_accepted`` sent the dispatch message, and a worker
    assigns the task. Whether it starts at once is an honest guess from the pool's free slots
    and the task's place in the pool's fair queue (``task_queue_estimate``: the tenant's queue
    head as read under the organization's lock, the pool's snapshot cached per process, at
    most one probe statement for tasks tied with it, and the free slots unless every slot is
    busy).
    """
    estimate = task_queue_estimate(task=task, head=queue_heads.pop(task, UNREAD))
    if estimate.position == 0:
        return SubmitOutcome(task, SubmitOutcome.STARTED)
    return SubmitOutcome(
        task, SubmitOutcome.QUEUED, estimate.position, expected_start=estimate.expected_start
    )


def create_and_accept(task: Task, *, input_files: Sequence[str]) -> SubmitOutcome:
    """Insert and accept ``task`` in one transaction; its stored inputs go if anything fails."""
    now = timezone.now()
    try:
        if not (_alone_possible(task) and _accept_alone(task, now=now)):
            with transaction.atomic():
                insert_accepted(task, now=now)
    except BaseException:
        discard_files(input_files)
        raise
    return finish_acceptance(task)
