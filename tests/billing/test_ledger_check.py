"""``manage.py ledger_check`` on a clean ledger and on deliberately corrupted rows."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_release, ledger_topup
from apps.billing.models import Balance, LedgerEntry
from apps.tasks.models import Task
from tests.factories import OrganizationFactory

from .helpers import new_task

pytestmark = pytest.mark.django_db


def run_check(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("ledger_check", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def busy_ledger(organization, other_organization, fund):
    """Two organizations with every kind of task outcome, consistent."""
    fund(organization, 100_000)
    fund(other_organization, 50_000)
    succeeded = new_task(organization, status="SUCCESS")
    failed = new_task(organization, status="FAILURE")
    cancelled = new_task(organization, status="CANCEL")
    running = new_task(organization, status="IN_PROGRESS")
    for task, price in (
        (succeeded, 14_000),
        (failed, 7_000),
        (cancelled, 28_000),
        (running, 3_500),
    ):
        ledger_hold(task=task, amount=price)
    ledger_capture(task=succeeded)
    ledger_release(task=failed)
    ledger_release(task=cancelled)
    other_task = new_task(other_organization, status="SUCCESS")
    ledger_hold(task=other_task, amount=14_000)
    ledger_capture(task=other_task)
    return {
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
        "running": running,
        "other": other_task,
    }


def insert_entry(organization_id: int, **values: object) -> None:
    """A rogue row, written with raw SQL the way a bug or a hand edit would."""
    row = {
        "organization_id": organization_id,
        "kind": "topup",
        "delta_available": 0,
        "delta_held": 0,
        "available_after": 0,
        "held_after": 0,
        "idempotency_key": "rogue",
        "task_id": None,
        "stripe_object_id": "",
        "operator_id": None,
        "reason": "",
        **values,
    }
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {LedgerEntry._meta.db_table} ({columns}, created_at) "  # noqa: S608
            f"VALUES ({placeholders}, CURRENT_TIMESTAMP)",
            list(row.values()),
        )


def test_clean_ledger_is_ok(busy_ledger):
    code, out, _ = run_check()
    assert code == 0
    assert out == "ledger OK (2 organizations, 11 entries)\n"


def test_empty_ledger_is_ok():
    assert run_check() == (0, "ledger OK (0 organizations, 0 entries)\n", "")


def test_balance_changed_behind_the_ledgers_back(busy_ledger, organization):
    Balance.objects.filter(organization=organization).update(available=999_999)
    code, out, _ = run_check()
    assert code == 1
    assert out.splitlines() == [
        "ledger DRIFT: 1 problem(s) in 2 organizations, 11 entries, 5 tasks:",
        f"  - [balance] organization {organization.pk}: the balance differs from the sum of its "
        "ledger entries (available/held) (expected 82500/3500, actual 999999/3500)",
    ]


def test_rogue_entry_inserted_with_raw_sql(busy_ledger, organization):
    last = LedgerEntry.objects.filter(organization=organization).order_by("-id").first()
    assert last is not None
    # Looks plausible on its own (after values follow the chain), but the balance never moved.
    insert_entry(
        organization.pk,
        delta_available=5_000,
        available_after=last.available_after + 5_000,
        held_after=last.held_after,
    )
    rogue = LedgerEntry.objects.get(idempotency_key="rogue")
    code, out, _ = run_check()
    assert code == 1
    assert out.splitlines()[1:] == [
        f"  - [balance] organization {organization.pk}: the balance differs from the sum of its "
        "ledger entries (available/held) (expected 87500/3500, actual 82500/3500)",
    ]
    assert rogue.available_after == 87_500


def test_rogue_entry_breaking_the_chain_and_its_shape(busy_ledger, organization):
    insert_entry(organization.pk, kind="capture", delta_available=100, delta_held=0)
    rogue = LedgerEntry.objects.get(idempotency_key="rogue")
    report = ledger_audit()
    assert [str(d) for d in report.drifts] == [
        f"[entry] organization {organization.pk}, entry {rogue.pk}: a capture must only take "
        "tokens out of held (expected None, actual +100 available / +0 held)",
        f"[chain] organization {organization.pk}, entry {rogue.pk}: available_after/held_after "
        "do not follow from the previous entry (expected 82600/3500, actual 0/0)",
        f"[balance] organization {organization.pk}: the balance differs from the sum of its "
        "ledger entries (available/held) (expected 82600/3500, actual 82500/3500)",
    ]


def test_task_with_both_capture_and_release_forced_in(busy_ledger, organization):
    task = busy_ledger["succeeded"]
    last = LedgerEntry.objects.filter(organization=organization).order_by("-id").first()
    assert last is not None
    # The settle key is unique, so forcing a second settle needs another key: exactly what a
    # buggy code path writing its own key would do.
    insert_entry(
        organization.pk,
        kind="release",
        task_id=task.pk,
        delta_available=14_000,
        delta_held=-14_000,
        available_after=last.available_after + 14_000,
        held_after=last.held_after - 14_000,
        idempotency_key=f"task:{task.pk}:forced",
    )
    rogue = LedgerEntry.objects.get(idempotency_key=f"task:{task.pk}:forced")
    code, out, _ = run_check()
    assert code == 1
    org = organization.pk
    assert out.splitlines() == [
        "ledger DRIFT: 3 problem(s) in 2 organizations, 12 entries, 5 tasks:",
        f"  - [chain] organization {org}, entry {rogue.pk}: the balance after this entry is "
        "negative (expected >= 0/>= 0, actual 96500/-10500)",
        f"  - [balance] organization {org}: the balance differs from the sum of its ledger "
        "entries (available/held) (expected 96500/-10500, actual 82500/3500)",
        f"  - [settle] organization {org}, task {task.pk}: the task was both captured and "
        "released (expected one capture or release, actual ['capture', 'release'])",
    ]


def test_finished_tasks_settled_wrongly_or_not_at_all(organization, fund):
    fund(organization, 100_000)
    released_success = new_task(organization, status="SUCCESS")
    captured_failure = new_task(organization, status="FAILURE")
    unsettled_cancel = new_task(organization, status="CANCEL")
    settled_running = new_task(organization, status="IN_PROGRESS")
    for task in (released_success, captured_failure, unsettled_cancel, settled_running):
        ledger_hold(task=task, amount=1_000)
    ledger_release(task=released_success)
    ledger_capture(task=captured_failure)
    ledger_release(task=settled_running)
    report = ledger_audit()
    org = organization.pk
    assert sorted(str(d) for d in report.drifts) == sorted(
        [
            f"[settle] organization {org}, task {released_success.pk}: the task is SUCCESS but "
            "was settled wrongly (expected capture, actual release)",
            f"[settle] organization {org}, task {captured_failure.pk}: the task is FAILURE but "
            "was settled wrongly (expected release, actual capture)",
            f"[settle] organization {org}, task {unsettled_cancel.pk}: the task is CANCEL but its "
            "hold was never settled (expected release, actual nothing)",
            f"[settle] organization {org}, task {settled_running.pk}: the task is still "
            "IN_PROGRESS but was settled already (expected no settle, actual ['release'])",
        ]
    )
    assert run_check()[0] == 1


def test_settle_without_hold_and_mismatched_amount(organization):
    orphan = new_task(organization, status="SUCCESS")
    insert_entry(
        organization.pk,
        kind="capture",
        task_id=orphan.pk,
        idempotency_key=f"task:{orphan.pk}:settle",
    )
    report = ledger_audit()
    assert [str(d) for d in report.drifts] == [
        f"[settle] organization {organization.pk}, task {orphan.pk}: the task was settled "
        "without a hold (expected no settle, actual ['capture'])",
    ]


def test_entries_and_balance_of_an_organization_without_balance_row(organization, fund):
    fund(organization, 10)
    Balance.objects.filter(organization=organization).delete()
    code, out, _ = run_check()
    assert code == 1
    assert out.splitlines()[1:] == [
        f"  - [balance] organization {organization.pk}: the organization has ledger entries but "
        "no balance row (expected 10/0, actual missing)",
    ]


def test_progress_is_shown_for_ledgers_larger_than_a_chunk(organization):
    for n in range(7):
        ledger_topup(organization=organization, amount=1, idempotency_key=f"k{n}")
    code, out, err = run_check("--chunk-size", "3")
    assert (code, out) == (0, "ledger OK (1 organizations, 7 entries)\n")
    assert "  entries: 7/7 (100%)" in err.splitlines()


def test_quiet_run_shows_no_progress(organization):
    for n in range(7):
        ledger_topup(organization=organization, amount=1, idempotency_key=f"k{n}")
    code, _, err = run_check("--chunk-size", "3", "--verbosity", "0")
    assert (code, err) == (0, "")


def test_chunk_boundaries_do_not_split_a_tasks_entries(organization, fund):
    fund(organization, 100_000)
    tasks = [new_task(organization, status="SUCCESS") for _ in range(5)]
    for task in tasks:
        ledger_hold(task=task, amount=100)
        ledger_capture(task=task)
    for chunk in ("1", "2", "3", "4", "50"):
        assert run_check("--chunk-size", chunk)[0] == 0, chunk
    report = ledger_audit(chunk_size=2)
    assert (report.organizations, report.entries, report.tasks) == (1, 11, 5)


def test_many_drifts_are_counted_but_listing_is_capped(fund):
    organizations = [OrganizationFactory() for _ in range(5)]
    for organization in organizations:
        fund(organization, 10)
    Balance.objects.update(available=1)
    code, out, _ = run_check("--max-drifts", "2")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "ledger DRIFT: 5 problem(s) in 5 organizations, 5 entries, 0 tasks:"
    assert len(lines) == 4
    assert lines[-1] == "  … and 3 more"


def test_tasks_unknown_to_the_tasks_table_are_reported(organization, fund):
    fund(organization, 10_000)
    task = new_task(organization, status="SUCCESS")
    ledger_hold(task=task, amount=1_000)
    ledger_capture(task=task)
    assert run_check()[0] == 0
    assert Task.objects.filter(pk=task.pk).exists()
