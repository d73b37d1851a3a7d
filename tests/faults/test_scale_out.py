"""Issue 15: the scale-out proof. Two web processes and two Celery workers, each its own
process with its own environment and name, share one PostgreSQL database and one Redis, as
two hosts behind a load balancer would.

Four tenants submit 200 tasks through both webs (one tenant's backlog of 80 first, then the
three others at once, so a first-come first-served dispatcher would start all 80 before any
other tenant's task); the workers start once the queue is full, then more tasks arrive
through both webs while they work. Afterwards:

- no task was submitted upstream twice: one sandbox job per task, each submitted once, and
  as many jobs as tasks;
- both workers did work (each one's own count of the pipeline tasks it ran);
- fairness held across processes: the first starts interleave the four tenants instead of
  draining the big backlog first;
- every task succeeded and ``ledger_check`` finds nothing wrong.

The workers coalesce dispatch passes through Redis (``TASK_DISPATCH_COALESCE``, on in
production), so the two of them also share the coalescing flags, as separate hosts do.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command

from apps.accounts.models import MembershipTier
from apps.engines.models import SandboxJob
from apps.tasks.enums import TERMINAL_STATUSES, Status
from apps.tasks.models import Task
from config.celery import app
from tests.factories import OrganizationFactory
from tests.integration_support import ROOT, STARTUP_TIMEOUT, Worker, wait_for, worker_environment
from tests.tasks.helpers import sandbox_account

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

BACKLOG = 80  # the big tenant's tasks, submitted first
EACH = 30  # each of the three other tenants' tasks, submitted after it
LATE = 10  # each tenant's tasks submitted while the workers run
#: The environment every process of this "cluster" shares (as a deployment's would).
CLUSTER_ENV = {"TASK_DISPATCH_COALESCE": "true", "LOG_LEVEL": "WARNING"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Web:
    """One gunicorn serving the app on a port of its own."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log_path = log_dir / f"{name}.log"
        env = worker_environment(**CLUSTER_ENV, MJGATE_INSTANCE=name)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "config.wsgi:application",
                 "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--timeout", "120",
                 "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            try:
                return requests.get(f"{self.url}/healthz", timeout=30).status_code < 500
            except requests.RequestException:  # not listening yet, or still starting
                return False

        wait_for(answers, timeout=STARTUP_TIMEOUT, interval=0.2, what=f"{self.name} to answer")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def webs(transactional_db: None, tmp_path: Path) -> Iterator[list[Web]]:
    started = [Web("web-a", tmp_path), Web("web-b", tmp_path)]
    try:
        for web in started:
            web.wait_ready()
        yield started
    finally:
        for web in started:
            web.stop()


def _submit(web: Web, key: str, prompt: str) -> str:
    response = requests.post(
        f"{web.url}/mj/submit/shorten",
        data=json.dumps({"prompt": prompt}),
        headers={"mj-api-secret": key, "Content-Type": "application/json"},
        timeout=60,
    )
    body = response.json()
    assert response.status_code == 200 and body.get("code") in (1, 22), (web.name, body)
    return str(body["result"])


def _submit_many(webs: list[Web], jobs: list[tuple[str, str]], threads: int) -> list[str]:
    """Submit ``(key, prompt)`` pairs, alternating between the webs, ``threads`` at a time."""

    def one(indexed: tuple[int, tuple[str, str]]) -> str:
        index, (key, prompt) = indexed
        return _submit(webs[index % len(webs)], key, prompt)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, enumerate(jobs)))


def _tasks_run(worker: Worker) -> int:
    """Pipeline tasks this worker ran, as the worker itself counts them (Celery's stats)."""
    replies = app.control.inspect(destination=[worker.name], timeout=5).stats() or {}
    totals = replies.get(worker.name, {}).get("total", {})
    return sum(count for name, count in totals.items() if name.startswith("tasks."))


def test_two_webs_and_two_workers_share_the_work_without_doubling_it(
    webs: list[Web],
    celery_worker_factory: Callable[..., Worker],
    make_key: Callable[..., Any],
    fund: Callable[..., None],
) -> None:
    tier = MembershipTier.objects.create(
        code="SCALE", name="Scale-out test", max_unfinished_tasks=500, sort_order=9
    )
    tenants = [OrganizationFactory(name=f"tenant-{n}", tier=tier) for n in range(4)]
    keys = {}
    for organization in tenants:
        fund(organization, 10_000_000)
        keys[organization.pk] = make_key(organization).plaintext
    for n in range(2):
        sandbox_account(f"scale-{n}", modes="FAST,RELAX", concurrency=3, duration="0.3")
    big, *others = tenants

    # The queue fills while no worker runs: the big tenant first, then the others at once.
    ids = _submit_many(webs, [(keys[big.pk], f"backlog {n}") for n in range(BACKLOG)], 4)
    ids += _submit_many(
        webs,
        [(keys[o.pk], f"tenant {o.pk} task {n}") for n in range(EACH) for o in others],
        6,
    )
    assert Task.objects.filter(pk__in=ids, status=Status.NOT_START).count() == len(ids)

    workers = [
        celery_worker_factory(pool="prefork", concurrency=2, **CLUSTER_ENV, MJGATE_INSTANCE=n)
        for n in ("worker-a", "worker-b")
    ]
    ids += _submit_many(
        webs, [(keys[t.pk], f"late {t.pk} {n}") for n in range(LATE) for t in tenants], 4
    )

    def statuses() -> Counter[str]:
        return Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))

    wait_for(
        lambda: sum(statuses()[s] for s in TERMINAL_STATUSES) == len(ids),
        timeout=600,
        interval=1,
        what=lambda: f"every task to finish: {dict(statuses())}",
    )
    assert statuses() == {Status.SUCCESS: len(ids)}, dict(statuses())

    # Submitted upstream once each: one job per task, no job submitted twice.
    jobs = SandboxJob.objects.filter(task_id__in=ids)
    assert jobs.count() == len(ids) == len(set(ids))
    assert jobs.values("task_id").distinct().count() == len(ids)
    assert set(jobs.values_list("submit_calls", flat=True)) == {1}

    # Both workers did a share of the pipeline's work.
    shares = [_tasks_run(worker) for worker in workers]
    assert min(shares) >= 0.1 * sum(shares), shares

    # Fair across processes: the first starts serve every tenant, the backlog not first.
    first = list(
        Task.objects.filter(pk__in=ids, submit_claimed_at__isnull=False)
        .order_by("submit_claimed_at")
        .values_list("organization_id", flat=True)[:40]
    )
    served = Counter(first)
    assert set(served) == {t.pk for t in tenants}, served
    assert served[big.pk] <= 20, served  # first come, first served would give it all 40
    assert all(served[o.pk] >= 5 for o in others), served

    call_command("ledger_check", stdout=io.StringIO(), stderr=io.StringIO())  # raises on drift
