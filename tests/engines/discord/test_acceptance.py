"""Issue 13's acceptance run: 3 accounts x 3 slots, 60 tasks, and everything that can die dies.

A real Celery worker and a real ``manage.py discord_gateway`` process drive three accounts on
the fake Discord (jobs of about a second). While the tasks run the fake drops every WebSocket,
the gateway process is SIGKILLed (a new one takes over the leases), the worker is SIGKILLed (a
new one starts; the test plays beat and runs the sweeper), and the fake drops the WebSockets
again. Every task must succeed, no interaction may reach Discord twice, and the ledger must show
each task captured once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.services import upstream_account_create
from apps.tasks.enums import TERMINAL_STATUSES, Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.integration_support import Worker

from .conftest import _channels, account_options
from .pipeline_support import GatewayProcess, wait_live

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

ACCOUNTS = 3
SLOTS = 3
TASKS = 60
FUNDS = 10_000_000
#: Short leases and time limits so the sweeper may act within seconds of the worker's death.
WORKER_ENV = {
    "TASK_LEASE_GRACE": "1",
    "CELERY_TASK_TIME_LIMIT": "15",
    "CELERY_TASK_SOFT_TIME_LIMIT": "12",
}


@pytest.fixture
def slow_fake() -> Iterator[FakeDiscordThread]:
    """Jobs of about a second (4 progress steps of 0.25 s), so the kills land mid-flight."""
    fake = FakeDiscordThread(step_seconds=0.25, steps=4, heartbeat_ms=1000).start()
    yield fake
    fake.stop()


def _wait(
    condition: Callable[[], bool], timeout: float, *, sweep: bool = False, every: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if sweep:
            tasks_sweep()  # the beat safety net, as ``celery beat`` would run it
        time.sleep(every)
    raise AssertionError("timed out")


def test_sixty_tasks_survive_gateway_worker_and_websocket_deaths(
    celery_worker_factory: Callable[..., Worker],
    slow_fake: FakeDiscordThread,
    organization: Organization,
    make_key: Callable[..., Any],
    fund: Callable[[Organization, int], None],
    tmp_path: Any,
) -> None:
    fund(organization, FUNDS)
    # A plan of its own that lets all 60 tasks wait at once (PREMIUM stops at 50).
    tier = MembershipTier.objects.get(code="PREMIUM")
    tier.pk = None
    tier.code, tier.name, tier.max_unfinished_tasks = "ACCEPTANCE", "Acceptance", TASKS
    tier.save()
    organization.tier = tier
    organization.save(update_fields=["tier"])
    tokens = []
    for n in range(ACCOUNTS):
        channel = str(next(_channels))
        token = f"mfa.acceptance-{n}-{channel}"
        slow_fake.add_user(token, guild_id="600000000000000001", channel_ids=[channel])
        upstream_account_create(
            engine="discord",
            name=f"dc-accept-{n}",
            modes=["FAST", "RELAX"],
            concurrency=SLOTS,
            options={**account_options(slow_fake, channel), "token": token},
        )
        tokens.append(token)
    gateway = GatewayProcess(tmp_path, "gw-accept-1").start()
    gateways = [gateway]
    try:
        wait_live(slow_fake, tokens)
        worker = celery_worker_factory(**WORKER_ENV)
        caller = Caller(organization=organization, api_key=make_key(organization).api_key)
        ids = [
            task_submit(caller=caller, action=Action.IMAGINE, prompt=f"acceptance {n}").task.pk
            for n in range(TASKS)
        ]

        def done() -> int:
            return Task.objects.filter(pk__in=ids, status__in=TERMINAL_STATUSES).count()

        def drop_all(how: str) -> None:
            # Every socket live right now: a gateway that just reconnected (a heartbeat ACK
            # late on a loaded machine counts as a dead connection) has none to drop yet.
            wait_live(slow_fake, tokens)
            dropped = sum(
                slow_fake.control("drop", {"token": token, "how": how})["dropped"]
                for token in tokens
            )
            assert dropped == ACCOUNTS

        _wait(lambda: done() >= 5, timeout=60)
        drop_all("close")

        _wait(lambda: done() >= 15, timeout=60, sweep=True)
        gateway.kill()  # SIGKILL: its leases are left to expire (4 s) and be taken over
        assert done() < TASKS
        gateway = GatewayProcess(tmp_path, "gw-accept-2").start()
        gateways.append(gateway)

        _wait(lambda: done() >= 25, timeout=90, sweep=True)
        worker.kill()
        assert done() < TASKS
        time.sleep(0.5)
        celery_worker_factory(**WORKER_ENV)

        _wait(lambda: done() >= 35, timeout=90, sweep=True)
        drop_all("reconnect")

        _wait(lambda: done() == TASKS, timeout=180, sweep=True)
    finally:
        for process in gateways:
            process.stop()

    tasks = list(Task.objects.filter(pk__in=ids))
    statuses = Counter(task.status for task in tasks)
    assert set(statuses) <= set(TERMINAL_STATUSES)
    # The bar: every task terminal, charged once (checked below). Nothing here is a
    # reason for a task to fail — a submit interrupted by a kill is found again (acknowledged,
    # answered, or certainly never sent) instead of being given up — so every one succeeds.
    not_ok = [(t.status, t.error_code, t.fail_reason) for t in tasks if t.status != Status.SUCCESS]
    assert statuses[Status.SUCCESS] == TASKS, not_ok
    stats = slow_fake.stats()
    assert stats["duplicate_nonces"] == 0
    # One interaction per task: nothing was sent twice under another nonce either.
    assert stats["interactions"] == TASKS
    # Which rows reached Discord: the fake's own record of the nonces it accepted (the ground
    # truth). ``sending_at`` is no such record: it is written just before the POST leaves, so a
    # worker killed in between leaves a row with it that Discord never saw. Such a row is closed
    # (refused) once the look-up is sure of that, and the task is sent again.
    accepted = dict(slow_fake.discord.world.nonces)
    rows = list(
        DiscordJob.objects.filter(task_id__in=ids).values_list(
            "task_id", "nonce", "phase", "sending_at", "fail_reason"
        )
    )
    reached = Counter(task_id for task_id, nonce, *_ in rows if accepted.get(nonce))
    # Every task had exactly one interaction that reached Discord, and it is the task's job.
    assert set(reached.values()) == {1} and len(reached) == TASKS, [
        row for row in rows if reached[row[0]] != 1
    ]
    assert {nonce for _task_id, nonce, *_ in rows if accepted.get(nonce)} == {
        task.upstream_job_id for task in tasks
    }
    # Every other row was closed: none is left waiting for a look-up that will never come.
    unsent = [row for row in rows if not accepted.get(row[1])]
    assert all(phase == Phase.REFUSED for _t, _n, phase, *_ in unsent), unsent
    assert len({task.upstream_job_id for task in tasks}) == TASKS
    for task in tasks:
        kinds = list(
            LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True)
        )
        expected = EntryKind.CAPTURE if task.status == Status.SUCCESS else EntryKind.RELEASE
        assert kinds == [EntryKind.HOLD, expected], (task.pk, task.status, kinds)
    assert balance_get(organization=organization).held == 0
    report = ledger_audit()
    assert report.ok, report
    # Both drops reached the gateway, and the second gateway took the accounts over.
    assert stats["drops:close"] == ACCOUNTS and stats["drops:reconnect"] == ACCOUNTS
