"""A submit outside a transaction is accepted in one statement (issue 15, P1).

``tasks_task_accept`` (migration ``tasks.0018``) locks the organization, checks the tier limit,
numbers the task in its tenant's queue, inserts it and holds its price through the ledger's
``ledger_task_hold``, as its own transaction: one round trip instead of BEGIN, three
statements and COMMIT. These tests run outside the test transaction (``transaction=True``), as
a request does, and check that the one-statement path writes exactly what the transaction path
writes and hands every case it does not cover (webhook outbox rows, a refused hold) to it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.billing.selectors import price_get
from apps.core.errors import ConcurrencyLimitReached, InsufficientBalance
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task, TenantQueueCounter
from apps.tasks.services import acceptance
from apps.tasks.services.inputs import Caller, ClientEcho
from apps.tasks.services.submit import task_submit
from apps.webhooks.models import WebhookEndpoint, WebhookEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def caller(organization: Organization, live_key: Any, fund: Any) -> Caller:
    MembershipTier.objects.filter(pk=organization.tier_id).update(max_unfinished_tasks=100)
    fund(organization, 10_000_000)
    return Caller(organization=organization, api_key=live_key.api_key)


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which path accepted each submit: ``alone`` (one statement) or ``transaction``."""
    taken: list[str] = []
    alone, transaction_path = acceptance._accept_alone, acceptance.insert_accepted

    def alone_spy(task: Task, **kwargs: Any) -> bool:
        accepted = alone(task, **kwargs)
        if accepted:
            taken.append("alone")
        return accepted

    def transaction_spy(task: Task, **kwargs: Any) -> None:
        taken.append("transaction")
        transaction_path(task, **kwargs)

    monkeypatch.setattr(acceptance, "_accept_alone", alone_spy)
    monkeypatch.setattr(acceptance, "insert_accepted", transaction_spy)
    return taken


def _submit(caller: Caller, prompt: str = "a red fox --ar 3:2", **kwargs: Any) -> Any:
    return task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt, **kwargs)


def test_a_submit_is_one_statement_and_writes_what_the_transaction_path_writes(
    caller: Caller, paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _submit(caller, "warm up")
    with CaptureQueriesContext(connection) as ctx:
        alone = _submit(caller, "a cat --ar 3:2 --seed 7", echo=ClientEcho(state="s1"))
    statements = [q["sql"] for q in ctx.captured_queries]
    # The acceptance is the one statement that writes; what follows reads the queue estimate
    # for the answer (the pool's snapshot, once a second).
    assert "tasks_task_accept(" in statements[0], statements
    assert all(s.startswith("SELECT") and "tasks_task_accept" not in s for s in statements[1:]), (
        statements
    )
    assert not [s for s in statements if s in ("BEGIN", "COMMIT") or "SAVEPOINT" in s]
    monkeypatch.setattr(acceptance, "_alone_possible", lambda task: False)
    other = _submit(caller, "a cat --ar 3:2 --seed 7", echo=ClientEcho(state="s1"))
    assert paths == ["alone", "alone", "transaction"]
    # No account runs here: both queue, one behind the other (the head the statement read).
    assert (alone.result, other.result) == ("queued", "queued")
    assert other.queue_position == alone.queue_position + 1
    columns = [
        f.column
        for f in Task._meta.concrete_fields
        if f.name not in ("id", "created_at", "updated_at", "submitted_at", "start_deadline")
        and f.name not in ("tenant_seq",)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(columns)} FROM tasks_task WHERE id = ANY(%s) ORDER BY tenant_seq",  # noqa: S608
            [[alone.task.pk, other.task.pk]],
        )
        written_alone, written_other = cursor.fetchall()
    assert written_alone == written_other
    stored = Task.objects.get(pk=alone.task.pk)
    assert stored.tenant_seq == alone.task.tenant_seq == 2
    assert stored.status == Status.NOT_START and stored.state == "s1" and stored.seed == 7
    assert stored.submitted_at == alone.task.submitted_at
    assert stored.created_at is not None and stored.updated_at is not None
    price = price_get(action=Action.IMAGINE, mode=Mode.FAST)
    hold = LedgerEntry.objects.get(task_id=alone.task.pk)
    assert (hold.kind, hold.delta_available, hold.delta_held) == (EntryKind.HOLD, -price, price)
    balance = Balance.objects.get(organization=caller.organization)
    assert (balance.available, balance.held) == (10_000_000 - 3 * price, 3 * price)
    assert Organization.objects.get(pk=caller.organization.pk).unfinished_tasks == 3
    assert ledger_audit().ok


def test_the_tier_limit_refuses_in_one_statement_and_writes_nothing(
    caller: Caller, paths: list[str]
) -> None:
    MembershipTier.objects.filter(pk=caller.organization.tier_id).update(max_unfinished_tasks=2)
    _submit(caller, "one")
    _submit(caller, "two")
    with pytest.raises(ConcurrencyLimitReached) as refused:
        _submit(caller, "three")
    tier = MembershipTier.objects.get(pk=caller.organization.tier_id)
    assert refused.value.details == {"limit": 2, "unfinished": 2, "tier": tier.code}
    assert refused.value.message == (
        f"Your {tier.name} plan allows 2 unfinished tasks at once; "
        "wait for one to finish or upgrade your plan."
    )
    assert paths == ["alone", "alone"]
    assert Task.objects.count() == 2
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == 2
    assert TenantQueueCounter.objects.get(organization=caller.organization).last == 2
    assert ledger_audit().ok


def test_too_little_balance_falls_back_and_is_refused_exactly(
    organization: Organization, live_key: Any, fund: Any, paths: list[str]
) -> None:
    price = price_get(action=Action.IMAGINE, mode=Mode.FAST)
    fund(organization, price - 1)
    caller = Caller(organization=organization, api_key=live_key.api_key)
    with pytest.raises(InsufficientBalance):
        _submit(caller)
    assert paths == ["transaction"]  # the one statement rolled back; the ledger answered
    assert Task.objects.count() == 0
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == 0
    assert not TenantQueueCounter.objects.filter(organization=organization).exists()
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held) == (price - 1, 0)
    assert Organization.objects.get(pk=organization.pk).unfinished_tasks == 0
    assert ledger_audit().ok


def test_outbox_rows_are_written_by_the_transaction_path(caller: Caller, paths: list[str]) -> None:
    _submit(caller, "no hook, no endpoint")
    _submit(caller, "own hook", echo=ClientEcho(notify_hook="https://example.com/hook"))
    WebhookEndpoint.objects.create(
        organization=caller.organization, url="https://example.com/endpoint", is_enabled=True
    )
    _submit(caller, "an endpoint listens")
    assert paths == ["alone", "transaction", "transaction"]
    created = WebhookEvent.objects.filter(event_type="task.created")
    assert created.count() == 2
    assert ledger_audit().ok


def test_a_test_key_holds_nothing_in_one_statement(
    organization: Organization, test_mode_key: Any, paths: list[str]
) -> None:
    caller = Caller(organization=organization, api_key=test_mode_key.api_key)
    outcome = _submit(caller)
    assert paths == ["alone"]
    assert Task.objects.get(pk=outcome.task.pk).is_test
    assert not LedgerEntry.objects.exists()


def test_a_hold_crossing_the_low_balance_threshold_takes_the_transaction_path(
    organization: Organization, live_key: Any, fund: Any, paths: list[str], settings: Any
) -> None:
    """The ``balance.low`` event is written in the accepting transaction, by the ledger."""
    price = price_get(action=Action.IMAGINE, mode=Mode.FAST)
    settings.BALANCE_LOW_THRESHOLD = 2 * price
    fund(organization, 3 * price)
    caller = Caller(organization=organization, api_key=live_key.api_key)
    _submit(caller, "above the threshold after")  # 3 -> 2 prices: not below
    _submit(caller, "crosses it")  # 2 -> 1: below, once
    _submit(caller, "below already")  # 1 -> 0: no crossing
    assert paths == ["alone", "transaction", "alone"]
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == 3
    assert ledger_audit().ok


def test_without_prepared_statements_the_one_statement_path_still_works(
    caller: Caller, paths: list[str], settings: Any
) -> None:
    """Behind a pooler in transaction mode (``DATABASE_PREPARED_STATEMENTS = False``)."""
    settings.DATABASE_PREPARED_STATEMENTS = False
    outcome = _submit(caller, "unprepared")
    assert paths == ["alone"]
    assert Task.objects.get(pk=outcome.task.pk).prompt == "unprepared"
    assert LedgerEntry.objects.get(task_id=outcome.task.pk).kind == EntryKind.HOLD
    assert ledger_audit().ok


def test_the_statements_row_takes_json_and_plain_times_as_they_are(
    caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row sent to ``tasks_task_accept`` is made without the fields' preparation where it
    would return the value unchanged (JSON values, aware times of fields that stamp nothing):
    the same JSON text as through every field's preparation, with only the two stamping
    fields (``created_at``, ``updated_at``) prepared."""
    from django.db.models import Field
    from django.utils import timezone

    now = timezone.now()
    task = Task(
        organization=caller.organization,
        api_key=caller.api_key,
        protocol="mjproxy",
        action=Action.IMAGINE,
        status=Status.NOT_START,
        mode=Mode.FAST,
        pool="shared",
        prompt="ünïcode \u2028 prompt",
        params={"a": [1, 2.5, None, True], "b": "x"},
        metadata={},
        inputs=["in/1.png"],
        properties={"finalPrompt": "p"},
        state=None,
        seed=7,
        price=3,
        submitted_at=now,
        start_deadline=now,
    )
    prepared: list[str] = []
    original = Field.get_db_prep_save

    def spy(self: Field, value: Any, connection: Any) -> Any:  # type: ignore[type-arg]
        prepared.append(self.attname)
        return original(self, value, connection)

    monkeypatch.setattr(Field, "get_db_prep_save", spy)
    fast = acceptance._row_json(task)
    assert sorted(prepared) == ["created_at", "updated_at"]
    monkeypatch.setattr(acceptance, "_json_as_is", dict)
    prepared.clear()
    full = acceptance._row_json(task)
    assert len(prepared) > 10
    # The same text but for the two stamps, which each call sets anew.
    stamps = re.compile(r'"(created_at|updated_at)":"[^"]+"')
    assert stamps.sub("", fast) == stamps.sub("", full)
    assert '"params":{"a":[1,2.5,null,true],"b":"x"}' in fast
    assert f'"submitted_at":"{now.isoformat()}"' in fast
