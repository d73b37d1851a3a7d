"""A real worker and a real web process, killed in the middle of 20 upstream jobs.

The test process plays the API (it submits through the services) and beat (it runs the
sweeper); a ``celery worker`` subprocess does the upstream calls; a ``runserver`` subprocess
receives the fake upstream's callbacks. Both subprocesses are SIGKILLed while jobs are being
submitted and polled, then started again. Every task must still succeed, the upstream must
have received every prompt exactly once, and every hold must have been captured exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.enums import TERMINAL_STATUSES, Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from apps.tasks.storage import read_file
from tests.fakes.mjproxy_server import FakeMjproxy
from tests.integration_support import (
    ROOT,
    STARTUP_TIMEOUT,
    WAIT_TIMEOUT,
    Worker,
    worker_environment,
)

from .helpers import mjproxy_account, set_tier

JOBS = 20
CONCURRENCY = 6
FUNDS = 1_000_000
#: Short leases and time limits so the sweeper may act within seconds of the kill.
WORKER_ENV = {
    "TASK_LEASE_GRACE": "1",
    "CELERY_TASK_TIME_LIMIT": "6",
    "CELERY_TASK_SOFT_TIME_LIMIT": "5",
    "MJPROXY_HTTP_TIMEOUT": "3",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Web:
    """``manage.py runserver`` on a fixed port, killable and restartable."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.log_path = log_dir / f"web-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=ROOT,
                env=worker_environment(**WORKER_ENV),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"web did not start: {self.log_path.read_text(errors='replace')}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    server = Web(_free_port(), tmp_path)
    yield server
    server.kill()


@pytest.fixture
def upstream() -> Iterator[FakeMjproxy]:
    fake = FakeMjproxy(secret="restart-secret", duration=1.2, submit_delay=0.3, callbacks=True)
    fake.start()
    yield fake
    fake.stop()


def _wait(
    condition: Callable[[], bool], timeout: float, *, sweep: bool = False, every: float = 0.3
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if sweep:
            tasks_sweep()  # the beat safety net, as ``celery beat`` would run it
        time.sleep(every)
    raise AssertionError("timed out")


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_restart_of_worker_and_web_mid_flight_loses_none_and_submits_none_twice(
    celery_worker_factory: Callable[..., Worker],
    web: Web,
    upstream: FakeMjproxy,
    organization,
    make_key,
    fund,
):
    fund(organization, FUNDS)
    set_tier(organization, "PREMIUM")
    issued = make_key(organization)
    web.start()
    mjproxy_account(upstream, concurrency=CONCURRENCY, callbacks=True, callback_base_url=web.url)
    worker = celery_worker_factory(**WORKER_ENV)
    caller = Caller(organization=organization, api_key=issued.api_key)
    prompts = [f"restart picture {n}" for n in range(JOBS)]
    ids = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task.pk
        for prompt in prompts
    ]

    def count(*statuses: str) -> int:
        return Task.objects.filter(pk__in=ids, status__in=statuses).count()

    def mid_submit() -> bool:
        return Task.objects.filter(
            pk__in=ids, status=Status.SUBMITTED, submit_claimed_at__isnull=False
        ).exists()

    # Kill both while the first jobs have finished, others are polled, and one is being
    # submitted: the upstream may get that job although the worker never learns its id.
    _wait(
        lambda: count(Status.SUCCESS) >= 3 and count(Status.IN_PROGRESS) > 0 and mid_submit(),
        timeout=WAIT_TIMEOUT,
        every=0.01,
    )
    worker.kill()
    web.kill()
    assert count(*TERMINAL_STATUSES) < JOBS
    time.sleep(0.5)
    web.start()
    celery_worker_factory(**WORKER_ENV)

    _wait(lambda: count(*TERMINAL_STATUSES) == JOBS, timeout=WAIT_TIMEOUT, sweep=True)

    tasks = list(Task.objects.filter(pk__in=ids))
    assert [t.status for t in tasks] == [Status.SUCCESS] * JOBS, [
        (t.status, t.fail_reason) for t in tasks
    ]
    assert upstream.submits_per_prompt() == dict.fromkeys(prompts, 1)
    assert len(upstream.submits()) == JOBS
    assert upstream.max_running <= CONCURRENCY
    assert len({t.upstream_job_id for t in tasks}) == JOBS
    for task in tasks:
        assert read_file(task.result["image"]) == upstream.served_images[task.upstream_job_id]
        kinds = list(
            LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True)
        )
        assert kinds == [EntryKind.HOLD, EntryKind.CAPTURE]
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (FUNDS - JOBS * 14000, 0)
    # The interrupted submit was resolved by asking the upstream, not by guessing.
    assert upstream.requests_to("/mj/task/list")
