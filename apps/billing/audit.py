"""Verifies the ledger's invariants (SPEC §3) from the rows alone: ``manage.py ledger_check``.

Nothing here trusts the code that wrote the rows. The audit recomputes every organization's
balance from its entries, walks each organization's ``available_after``/``held_after`` chain in
id order (the ledger's balance lock makes id order the order of movements), checks that every
entry has the shape its kind requires, that every task with a hold was settled exactly as
its status demands, that a refund linked to a task gives back at most what the task was
charged, once, that a dispute's reinstatement gives back at most what its withdrawal took, that
no test task moved tokens, and that every accepted live task was held.

It reads in chunks (keyset pagination, constant memory per chunk plus two integers per
organization) and, on PostgreSQL, inside one REPEATABLE READ READ ONLY transaction, so a ledger
that keeps moving while the audit runs is still seen as one consistent snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Value
from django.db.models.functions import Concat

from apps.accounts.models import Organization
from apps.tasks.enums import TERMINAL_STATUSES, UNFINISHED_STATUSES, Status
from apps.tasks.models import Task

from .ledger import (
    CLAWBACK_KEY_SUFFIX,
    DISPUTE_KEY_PREFIX,
    DISPUTE_REINSTATED,
    DISPUTE_WITHDRAWN,
    TASK_KEY_PREFIX,
    task_hold_key,
    task_refund_key,
    task_rest_key,
)
from .models import Balance, EntryKind, LedgerEntry

#: progress(phase, done, total)
Progress = Callable[[str, int, int], None]

SETTLE_KINDS = (EntryKind.CAPTURE, EntryKind.RELEASE)
TASK_KINDS = (EntryKind.HOLD, *SETTLE_KINDS)
#: What the task walk reads of a task's entries: its hold, settle and refund (a refund linked
#: to a task gives its captured price back; the clawback's refund names no task).
TASK_WALK_KINDS = (*TASK_KINDS, EntryKind.REFUND)


@dataclass(frozen=True)
class Drift:
    check: str
    organization_id: int | None
    message: str
    expected: Any = None
    actual: Any = None
    entry_id: int | None = None
    task_id: str | None = None

    def __str__(self) -> str:
        where = [f"organization {self.organization_id}"]
        if self.task_id is not None:
            where.append(f"task {self.task_id}")
        if self.entry_id is not None:
            where.append(f"entry {self.entry_id}")
        text = f"[{self.check}] {', '.join(where)}: {self.message}"
        if self.expected is not None or self.actual is not None:
            text += f" (expected {self.expected}, actual {self.actual})"
        return text


@dataclass
class LedgerReport:
    organizations: int = 0
    entries: int = 0
    tasks: int = 0
    drifts: list[Drift] = field(default_factory=list)
    drift_count: int = 0
    max_drifts: int = 1000

    @property
    def ok(self) -> bool:
        return self.drift_count == 0

    def add(self, drift: Drift) -> None:
        self.drift_count += 1
        if len(self.drifts) < self.max_drifts:
            self.drifts.append(drift)


@contextmanager
def _snapshot() -> Iterator[None]:
    # SET TRANSACTION must be the first statement of a transaction; inside a caller's
    # transaction we read with whatever isolation the caller chose.
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _check_shape(report: LedgerReport, row: Mapping[str, Any]) -> None:
    kind, da, dh = row["kind"], row["delta_available"], row["delta_held"]
    problem = ""
    if kind in (EntryKind.TOPUP, EntryKind.SIGNUP_GRANT):
        if dh != 0 or da <= 0:
            problem = f"a {kind} must add to available only"
    elif kind == EntryKind.ADJUSTMENT:
        if dh != 0 or da == 0:
            problem = "an adjustment must change available only, by a non-zero amount"
    elif kind == EntryKind.REFUND:
        if dh != 0:
            problem = "a refund must not touch held tokens"
    elif kind == EntryKind.DISPUTE:
        key = row["idempotency_key"]
        if dh != 0 or row["task_id"] is not None:
            problem = "a dispute entry must change available only and name no task"
        elif _dispute_move(key) is None:
            problem = "a dispute entry must be a dispute's withdrawal or reinstatement"
        elif key.endswith(DISPUTE_WITHDRAWN) and da > 0:
            problem = "a dispute's withdrawal must not add tokens"
        elif key.endswith(DISPUTE_REINSTATED) and da < 0:
            problem = "a dispute's reinstatement must not take tokens"
    elif kind == EntryKind.HOLD:
        if dh < 0 or da != -dh:
            problem = "a hold must move tokens from available to held"
    elif kind == EntryKind.CAPTURE:
        if da != 0 or dh > 0:
            problem = "a capture must only take tokens out of held"
    elif kind == EntryKind.RELEASE:
        if dh > 0 or da != -dh:
            problem = "a release must move tokens from held back to available"
    else:
        problem = f"unknown entry kind {kind!r}"
    if not problem and kind in TASK_KINDS and row["task_id"] is None:
        problem = f"a {kind} must name its task"
    if problem:
        report.add(
            Drift(
                check="entry",
                organization_id=row["organization_id"],
                entry_id=row["id"],
                message=problem,
                actual=f"{da:+d} available / {dh:+d} held",
            )
        )


def _dispute_move(key: str) -> tuple[str, str] | None:
    """(dispute id, ``:withdrawn`` or ``:reinstated``) of a dispute's key, else None."""
    for suffix in (DISPUTE_WITHDRAWN, DISPUTE_REINSTATED):
        if key.startswith(DISPUTE_KEY_PREFIX) and key.endswith(suffix):
            dispute_id = key[len(DISPUTE_KEY_PREFIX) : -len(suffix)]
            if dispute_id:
                return dispute_id, suffix
    return None


@dataclass
class _Disputes:
    """What pass 1 needs to check each dispute's reinstatement against its withdrawal: per
    organization the running total releases took for pending clawbacks (``task:<id>:clawback``),
    and per dispute what its withdrawal took and that total when it did."""

    collected: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    withdrawals: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)

    def see(self, report: LedgerReport, row: Mapping[str, Any]) -> None:
        kind, key = row["kind"], row["idempotency_key"]
        organization_id = row["organization_id"]
        if kind == EntryKind.REFUND:
            if key.startswith(TASK_KEY_PREFIX) and key.endswith(CLAWBACK_KEY_SUFFIX):
                self.collected[organization_id] -= row["delta_available"]
            return
        move = _dispute_move(key) if kind == EntryKind.DISPUTE else None
        if move is None:
            return
        dispute_id, suffix = move
        if suffix == DISPUTE_WITHDRAWN:
            self.withdrawals[(organization_id, dispute_id)] = (
                -row["delta_available"],
                self.collected[organization_id],
            )
            return
        withdrawal = self.withdrawals.pop((organization_id, dispute_id), None)
        if withdrawal is None:
            report.add(
                Drift(
                    check="dispute",
                    organization_id=organization_id,
                    entry_id=row["id"],
                    message=f"dispute {dispute_id} was reinstated without a withdrawal before it",
                    expected="a withdrawal",
                    actual="nothing",
                )
            )
            return
        taken, collected_then = withdrawal
        # At most what the withdrawal took at once plus what releases took since for pending
        # clawbacks (all of it the withdrawal's at best).
        most = max(taken, 0) + self.collected[organization_id] - collected_then
        if row["delta_available"] > most:
            report.add(
                Drift(
                    check="dispute",
                    organization_id=organization_id,
                    entry_id=row["id"],
                    message=f"dispute {dispute_id}'s reinstatement gives back more than its "
                    "withdrawal took",
                    expected=f"<= {most}",
                    actual=row["delta_available"],
                )
            )


def _walk_entries(
    report: LedgerReport, *, chunk_size: int, progress: Progress | None
) -> dict[int, list[int]]:
    """Pass 1: entry shapes and each organization's after-chain. Returns the recomputed sums."""
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    # The previous entry's recorded after-values, per organization: each link is checked on its
    # own, so one broken link is reported where it is, independent of the true sums.
    previous: dict[int, tuple[int, int]] = {}
    disputes = _Disputes()
    total = LedgerEntry.objects.count()
    last_id = 0
    done = 0
    while True:
        rows = list(
            LedgerEntry.objects.filter(id__gt=last_id)
            .order_by("id")
            .values(
                "id",
                "organization_id",
                "kind",
                "delta_available",
                "delta_held",
                "available_after",
                "held_after",
                "task_id",
                "idempotency_key",
            )[:chunk_size]
        )
        if not rows:
            break
        for row in rows:
            _check_shape(report, row)
            disputes.see(report, row)
            organization_id = row["organization_id"]
            running = sums[organization_id]
            running[0] += row["delta_available"]
            running[1] += row["delta_held"]
            before = previous.get(organization_id, (0, 0))
            expected = (before[0] + row["delta_available"], before[1] + row["delta_held"])
            recorded = (row["available_after"], row["held_after"])
            previous[organization_id] = recorded
            if expected != recorded:
                report.add(
                    Drift(
                        check="chain",
                        organization_id=organization_id,
                        entry_id=row["id"],
                        message="available_after/held_after do not follow from the previous entry",
                        expected=f"{expected[0]}/{expected[1]}",
                        actual=f"{recorded[0]}/{recorded[1]}",
                    )
                )
            if recorded[0] < 0 or recorded[1] < 0:
                report.add(
                    Drift(
                        check="chain",
                        organization_id=row["organization_id"],
                        entry_id=row["id"],
                        message="the balance after this entry is negative",
                        expected=">= 0/>= 0",
                        actual=f"{recorded[0]}/{recorded[1]}",
                    )
                )
        done += len(rows)
        last_id = rows[-1]["id"]
        if progress:
            progress("entries", done, total)
    report.entries = done
    return sums


def _compare_balances(
    report: LedgerReport,
    sums: dict[int, list[int]],
    *,
    chunk_size: int,
    progress: Progress | None,
) -> None:
    """Pass 2: each Balance row against the sums of its organization's entries."""
    remaining = dict(sums)
    seen = 0
    total = Balance.objects.count()
    last_id = 0
    while True:
        rows = list(
            Balance.objects.filter(organization_id__gt=last_id)
            .order_by("organization_id")
            .values_list("organization_id", "available", "held")[:chunk_size]
        )
        if not rows:
            break
        for organization_id, available, held in rows:
            expected_available, expected_held = remaining.pop(organization_id, [0, 0])
            if (available, held) != (expected_available, expected_held):
                report.add(
                    Drift(
                        check="balance",
                        organization_id=organization_id,
                        message="the balance differs from the sum of its ledger entries "
                        "(available/held)",
                        expected=f"{expected_available}/{expected_held}",
                        actual=f"{available}/{held}",
                    )
                )
        seen += len(rows)
        last_id = rows[-1][0]
        if progress:
            progress("balances", seen, total)
    for organization_id, (expected_available, expected_held) in sorted(remaining.items()):
        report.add(
            Drift(
                check="balance",
                organization_id=organization_id,
                message="the organization has ledger entries but no balance row",
                expected=f"{expected_available}/{expected_held}",
                actual="missing",
            )
        )
    report.organizations = seen + len(remaining)


def _check_task(
    report: LedgerReport,
    task_id: str,
    task: Mapping[str, Any] | None,
    entries: list[Mapping[str, Any]],
) -> None:
    organization_id = task["organization_id"] if task else entries[0]["organization_id"]

    def drift(message: str, expected: Any = None, actual: Any = None) -> None:
        report.add(
            Drift(
                check="settle",
                organization_id=organization_id,
                task_id=task_id,
                message=message,
                expected=expected,
                actual=actual,
            )
        )

    if task is None:
        drift("ledger entries name a task that does not exist")
        return
    for entry in entries:
        if entry["organization_id"] != task["organization_id"]:
            report.add(
                Drift(
                    check="settle",
                    organization_id=entry["organization_id"],
                    task_id=task_id,
                    entry_id=entry["id"],
                    message="the entry belongs to another organization than its task",
                    expected=task["organization_id"],
                    actual=entry["organization_id"],
                )
            )
    if task["is_test"] and any(e["kind"] in TASK_KINDS for e in entries):
        # A test key's task runs on the sandbox pool and holds nothing (acceptance skips the
        # hold): any hold, capture or release of one moved real tokens.
        drift(
            "a test task moved tokens",
            expected="no hold, capture or release",
            actual=sorted(e["kind"] for e in entries if e["kind"] in TASK_KINDS),
        )
    holds = [e for e in entries if e["kind"] == EntryKind.HOLD]
    # The rest of a hold given back after a smaller capture (own account's platform fee) is
    # not a settle of its own: it must come with a capture, and the two must add up.
    rests = [
        e
        for e in entries
        if e["kind"] == EntryKind.RELEASE and e.get("idempotency_key") == task_rest_key(task_id)
    ]
    settles = [e for e in entries if e["kind"] in SETTLE_KINDS and e not in rests]
    kinds = sorted(e["kind"] for e in settles)
    status = task["status"]
    if len(holds) > 1:
        drift("the task was held more than once", expected=1, actual=len(holds))
    if settles and not holds:
        drift("the task was settled without a hold", expected="no settle", actual=kinds)
    if len(settles) > 1:
        message = (
            "the task was both captured and released"
            if len(set(kinds)) > 1
            else "the task was settled more than once"
        )
        drift(message, expected="one capture or release", actual=kinds)
    refunds = [e for e in entries if e["kind"] == EntryKind.REFUND]
    if refunds:
        _check_task_refund(task, refunds, settles, drift)
    if not holds:
        return
    if status in TERMINAL_STATUSES:
        wanted = EntryKind.CAPTURE if status == Status.SUCCESS else EntryKind.RELEASE
        if not settles:
            drift(f"the task is {status} but its hold was never settled", wanted, "nothing")
        elif len(settles) == 1 and settles[0]["kind"] != wanted:
            drift(f"the task is {status} but was settled wrongly", wanted, settles[0]["kind"])
    elif settles:
        drift(f"the task is still {status} but was settled already", "no settle", kinds)
    held = sum(e["delta_held"] for e in holds)
    if rests and (len(settles) != 1 or settles[0]["kind"] != EntryKind.CAPTURE):
        drift("the rest of a hold was given back without a capture", "a capture", kinds)
    given_back = -sum(e["delta_held"] for e in rests)
    for settle in settles:
        if -settle["delta_held"] + given_back != held:
            drift(
                "the settle does not match the hold",
                held,
                -settle["delta_held"] + given_back,
            )


def _check_task_refund(
    task: Mapping[str, Any],
    refunds: list[Mapping[str, Any]],
    settles: list[Mapping[str, Any]],
    drift: Callable[..., None],
) -> None:
    """A refund linked to a task gives back what the task paid, once (``ledger_refund_task``):
    a single positive entry keyed ``task:<id>:refund``, on a live task whose settle was a
    capture, at most what was captured. Anything else made tokens out of nothing."""
    task_id = task["id"]
    amounts = [e["delta_available"] for e in refunds]
    if len(refunds) > 1:
        drift("the task was refunded more than once", expected=1, actual=amounts)
    for refund in refunds:
        if refund["idempotency_key"] != task_refund_key(task_id):
            drift(
                "a refund linked to the task is not the task's refund",
                expected=task_refund_key(task_id),
                actual=refund["idempotency_key"],
            )
        if refund["delta_available"] <= 0:
            drift(
                "a refund linked to the task does not give tokens back",
                expected="> 0",
                actual=refund["delta_available"],
            )
    captures = [e for e in settles if e["kind"] == EntryKind.CAPTURE]
    if task["is_test"] or len(settles) != 1 or not captures or captures[0]["delta_held"] == 0:
        drift(
            "the task was refunded but never charged",
            expected="one capture",
            actual=sorted(e["kind"] for e in settles) or "nothing",
        )
        return
    captured = -captures[0]["delta_held"]
    given_back = sum(a for a in amounts if a > 0)
    if given_back > captured:
        drift("the task was refunded more than it was charged", captured, given_back)


def _walk_tasks(report: LedgerReport, *, chunk_size: int, progress: Progress | None) -> None:
    """Pass 3: every task with a hold, capture, release or refund is settled (and refunded) as
    its status demands."""
    with_task = LedgerEntry.objects.filter(task__isnull=False, kind__in=TASK_WALK_KINDS)
    total = with_task.values("task_id").distinct().count()
    last_task = ""
    done = 0
    while True:
        task_ids = list(
            with_task.filter(task_id__gt=last_task)
            .order_by("task_id")
            .values_list("task_id", flat=True)
            .distinct()[:chunk_size]
        )
        if not task_ids:
            break
        entries: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in (
            with_task.filter(task_id__in=task_ids)
            .order_by("id")
            .values(
                "id",
                "task_id",
                "organization_id",
                "kind",
                "delta_available",
                "delta_held",
                "idempotency_key",
            )
        ):
            entries[row["task_id"]].append(row)
        tasks: dict[str, Mapping[str, Any]] = {
            row["id"]: row
            for row in Task.objects.filter(id__in=task_ids).values(
                "id", "organization_id", "status", "is_test"
            )
        }
        for task_id in task_ids:
            _check_task(report, task_id, tasks.get(task_id), entries[task_id])
        done += len(task_ids)
        last_task = task_ids[-1]
        if progress:
            progress("tasks", done, total)
    report.tasks = done


def _walk_unheld_tasks(report: LedgerReport, *, chunk_size: int, progress: Progress | None) -> None:
    """Pass 4: every live task that was accepted was held. Acceptance prices a task, sets its
    ``submitted_at`` and holds its price (0 included) in one transaction; a test key's task
    holds nothing, and a MODAL task is not accepted until its second step. So a live task with
    ``submitted_at`` and no ``task:<id>:hold`` entry ran (or runs) without paying, and pass 3,
    which starts from the entries, cannot see it.

    Walks the task table by primary key in chunks: per chunk, the key of its last row (an
    index-only read of ``chunk_size`` keys), then one statement for the chunk's offenders,
    each hold looked up by the ledger's unique ``(organization, idempotency_key)`` index."""
    before, after = task_hold_key("|").split("|")
    hold = LedgerEntry.objects.filter(
        organization_id=OuterRef("organization_id"),
        idempotency_key=Concat(Value(before), OuterRef("pk"), Value(after)),
    )
    live_accepted = Q(is_test=False, submitted_at__isnull=False) & ~Q(status=Status.MODAL)
    tasks = Task.objects.order_by("pk")
    total = tasks.count() if progress else 0
    last: str | None = None
    done = reported = 0
    while True:
        page = tasks if last is None else tasks.filter(pk__gt=last)
        upper = list(page.values_list("pk", flat=True)[chunk_size - 1 : chunk_size])
        chunk = page.filter(pk__lte=upper[0]) if upper else page
        offenders = (
            chunk.filter(live_accepted)
            .exclude(Exists(hold))
            .values_list("pk", "organization_id", "status")
        )
        for task_id, organization_id, status in offenders:
            report.add(
                Drift(
                    check="settle",
                    organization_id=organization_id,
                    task_id=task_id,
                    message=f"the live task was accepted ({status}) but never held",
                    expected=task_hold_key(task_id),
                    actual="nothing",
                )
            )
        done = done + chunk_size if upper else total
        if progress and (upper or done != reported):
            reported = min(done, total)
            progress("accepted tasks", reported, total)
        if not upper:
            break
        last = upper[0]


def _compare_unfinished_counters(report: LedgerReport) -> None:
    """Each organization's running count of unfinished tasks (what the tier limit reads,
    kept by the task table's trigger) against a COUNT of its unfinished tasks."""
    off = (
        Organization.objects.annotate(
            counted=Count("tasks", filter=Q(tasks__status__in=UNFINISHED_STATUSES))
        )
        .exclude(unfinished_tasks=F("counted"))
        .order_by("pk")
        .values_list("pk", "unfinished_tasks", "counted")
    )
    for organization_id, counter, counted in off:
        report.add(
            Drift(
                check="unfinished",
                organization_id=organization_id,
                message="the organization's unfinished-task counter differs from a COUNT of "
                "its unfinished tasks",
                expected=counted,
                actual=counter,
            )
        )


def ledger_audit(
    *, chunk_size: int = 5000, progress: Progress | None = None, max_drifts: int = 1000
) -> LedgerReport:
    """Check every ledger invariant; the report lists each drift found."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    report = LedgerReport(max_drifts=max_drifts)
    with _snapshot():
        sums = _walk_entries(report, chunk_size=chunk_size, progress=progress)
        _compare_balances(report, sums, chunk_size=chunk_size, progress=progress)
        _walk_tasks(report, chunk_size=chunk_size, progress=progress)
        _walk_unheld_tasks(report, chunk_size=chunk_size, progress=progress)
        _compare_unfinished_counters(report)
    return report
