from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from apps.engines.base import _REGISTRY, Job, SubmitResult
from apps.engines.models import UpstreamAccount
from apps.engines.sandbox.engine import SandboxEngine
from apps.tasks.models import Task
from tests.factories import UpstreamAccountFactory
from tests.integration_support import celery_worker, celery_worker_factory  # noqa: F401

from .helpers import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Freeze ``timezone.now`` for the services, the sweeper and the sandbox alike."""
    frozen = Clock(timezone.now())
    monkeypatch.setattr(timezone, "now", frozen)
    yield frozen


@pytest.fixture
def caller(organization: Any, live_key: Any) -> Any:
    from apps.tasks.services.inputs import Caller

    return Caller(organization=organization, api_key=live_key.api_key)


class ScriptedEngine(SandboxEngine):
    """The sandbox, with a script of what its next submits do first (raise, or run a hook).

    ``idempotent_submit`` may be switched off per test to play an upstream that cannot find
    a job by our task id.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.submits = 0
        self.cancels: list[str] = []
        self.cancelled_jobs: list[str] = []

    def submit(self, job: Job) -> SubmitResult:
        self.submits += 1
        self.job = job  # what the step may submit itself
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step(Task.objects.select_related("organization").get(pk=job.task_id))
        return super().submit(job)

    def cancel(self, job: Job) -> None:
        self.cancels.append(job.task_id)
        self.cancelled_jobs.append(job.upstream_job_id)
        super().cancel(job)


@pytest.fixture
def scripted() -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine()
    _REGISTRY[engine.name] = engine
    yield engine
    del _REGISTRY[engine.name]


@pytest.fixture
def scripted_account(scripted: ScriptedEngine) -> UpstreamAccount:
    return UpstreamAccountFactory(engine=scripted.name, name="scripted-1")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record the Celery messages the services send, instead of sending them.

    ``on_commit`` callbacks run at once: these tests run inside a transaction that never
    commits, and what matters here is which messages would leave. A submit never dispatches:
    tests run ``dispatch_pending()`` themselves where a worker would take the dispatch message.
    """
    from django.db import transaction

    from apps.tasks import workers as celery_tasks

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    monkeypatch.setattr(celery_tasks.dispatch, "delay", lambda: calls.append(("dispatch",)))
    monkeypatch.setattr(
        celery_tasks.dispatch, "apply_async", lambda *a, **k: calls.append(("dispatch",))
    )
    monkeypatch.setattr(
        celery_tasks.start_job,
        "apply_async",
        lambda args, countdown=None: calls.append(("start", args[0])),
    )
    monkeypatch.setattr(
        celery_tasks.poll_job,
        "apply_async",
        lambda args, countdown=None: calls.append(("poll", *args)),
    )
    monkeypatch.setattr(
        celery_tasks.finish_job,
        "apply_async",
        lambda args, countdown=None: calls.append(("finish", *args)),
    )
    return calls
