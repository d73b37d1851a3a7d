"""Dispatch passes are coalesced: a burst of kicks sends one message, one pass runs at a time,
and no kick is lost (a kick during a pass makes the running dispatcher pass once more)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.tasks import lifecycle, scheduling, workers
from apps.tasks.enums import Status
from apps.tasks.lifecycle import dispatch_keys, dispatch_redis, dispatch_request
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_run
from tests.factories import OrganizationFactory, TaskFactory

from .helpers import sandbox_account

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="coalescing flags live in Redis"),
]


@pytest.fixture(autouse=True)
def coalescing(settings: Any) -> Any:
    """Coalescing on, with flags of this test's own (a queue name nobody else uses)."""
    settings.TASK_DISPATCH_COALESCE = True
    settings.CELERY_TASK_DEFAULT_QUEUE = f"coalesce-{uuid.uuid4().hex}"
    client = dispatch_redis()
    assert client is not None
    yield client
    client.delete(*dispatch_keys())


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(lifecycle, "send_now", lambda name, *args, **kw: sent.append(name))
    monkeypatch.setattr(workers.start_job, "apply_async", lambda **kwargs: None)
    return sent


def test_a_burst_of_kicks_sends_one_message(messages, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(25):
            lifecycle.kick_dispatcher()
    assert messages == ["tasks.dispatch"]


def test_a_kick_after_the_worker_took_the_message_sends_another(messages, coalescing):
    assert dispatch_request() is True
    assert dispatch_request() is False  # one is on its way
    dispatch_run()  # the worker takes it (nothing queued: an empty pass)
    assert dispatch_request() is True
    running = dispatch_keys()[2]
    assert coalescing.exists(running) == 0  # released when the run ended


def test_a_dispatcher_finding_another_running_leaves_the_request_to_it(
    coalescing, monkeypatch: pytest.MonkeyPatch
):
    passes: list[int] = []
    monkeypatch.setattr(
        scheduling,
        "dispatch_pending",
        lambda **_: passes.append(1) or scheduling.DispatchResult([]),
    )
    _, again, running = dispatch_keys()
    coalescing.set(running, "someone-else", ex=60)
    dispatch_request()
    result = dispatch_run()
    assert (result.assigned, result.deferred) == ([], True)
    assert passes == []  # no pass of its own: the running one will make it
    assert coalescing.exists(again) == 1  # the request is still there for the running one

    coalescing.delete(running)  # the other one finishes: a later run makes the pass
    dispatch_run()
    assert passes == [1]
    assert coalescing.exists(again) == 0


def test_a_worker_that_freed_a_slot_leaves_a_busy_dispatcher_one_more_pass(
    coalescing, monkeypatch: pytest.MonkeyPatch
):
    """The worker that freed a slot runs the dispatcher without a message (and no kick set
    ``again`` for it): finding another pass running, it asks that one to pass once more,
    which then sees the freed slot."""
    passes: list[int] = []
    monkeypatch.setattr(
        scheduling,
        "dispatch_pending",
        lambda **_: passes.append(1) or scheduling.DispatchResult([]),
    )
    _, again, running = dispatch_keys()
    coalescing.set(running, "someone-else", ex=60)
    assert coalescing.exists(again) == 0
    result = dispatch_run(took_message=False, start_first=True)
    assert (result.assigned, result.deferred, passes) == ([], True, [])
    assert coalescing.exists(again) == 1


def test_a_kick_during_a_pass_makes_one_more_pass(coalescing, monkeypatch: pytest.MonkeyPatch):
    passes: list[int] = []

    def one_pass(**_: object) -> scheduling.DispatchResult:
        passes.append(1)
        if len(passes) == 1:
            dispatch_request()  # a task finished while this pass ran
        return scheduling.DispatchResult([])

    monkeypatch.setattr(scheduling, "dispatch_pending", one_pass)
    dispatch_run()
    assert passes == [1, 1]


def test_a_pass_assigns_its_whole_batch_in_one_statement(messages):
    first = sandbox_account("coalesce-a", concurrency=2)
    second = sandbox_account("coalesce-b", concurrency=2)
    tasks = [TaskFactory(queued=True, organization=OrganizationFactory()) for _ in range(5)]
    with CaptureQueriesContext(connection) as queries:
        result = dispatch_run()
    assert len(result.assigned) == 4
    assignments = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('UPDATE "tasks_task"') and "SUBMITTED" in q["sql"]
    ]
    assert len(assignments) == 1
    rows = Task.objects.filter(pk__in=[t.pk for t in tasks])
    assert rows.filter(status=Status.SUBMITTED).count() == 4
    assert rows.filter(upstream_account=first).count() == 2
    assert rows.filter(upstream_account=second).count() == 2
    assert rows.filter(status=Status.NOT_START).count() == 1


def test_a_run_without_a_message_leaves_the_message_on_its_way_marked(coalescing):
    """A worker that freed a slot dispatches without a message: a message already on its way
    stays marked, so kicks meanwhile do not send a second one."""
    assert dispatch_request() is True
    dispatch_run(took_message=False)
    assert dispatch_request() is False


def test_a_kick_is_one_redis_command_setting_both_flags_with_their_ttls(
    coalescing, monkeypatch: pytest.MonkeyPatch
):
    """The submit's kick costs one Redis round trip (a script), not a pipeline of two SETs."""
    import redis.client
    import redis.connection

    sent: list[Any] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        # Every command reaches the socket here (framed by redis-py or by LeanScript): its name
        # is the first bulk string.
        sent.append(b"".join(command).split(b"\r\n")[2].decode())
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    monkeypatch.setattr(redis.client.Pipeline, "execute", lambda *a, **k: pytest.fail("pipeline"))
    queued, again, _ = dispatch_keys()
    assert dispatch_request() is True
    assert dispatch_request() is False
    assert sent in (["EVALSHA", "EVALSHA"], ["EVALSHA", "SCRIPT", "EVALSHA", "EVALSHA"])
    assert 0 < coalescing.ttl(queued) <= lifecycle.DISPATCH_QUEUED_TTL
    assert lifecycle.DISPATCH_QUEUED_TTL < coalescing.ttl(again) <= lifecycle.DISPATCH_RUNNING_TTL


def test_a_kick_survives_a_dropped_connection_and_a_server_without_the_script(coalescing):
    """The kick's own connection: a dropped socket is reconnected on the next kick, and a
    server that lost its scripts (restarted) gets the script again."""
    from apps.core.cache import LeanScript

    script = LeanScript(lifecycle._KICK + "\n-- a source no server has seen yet")
    queued, again, _ = dispatch_keys()
    keys, args = [again, queued], [lifecycle.DISPATCH_RUNNING_TTL, lifecycle.DISPATCH_QUEUED_TTL]
    assert script(coalescing, keys=keys, args=args) == 1  # NOSCRIPT, loaded, run
    assert script(coalescing, keys=keys, args=args) == 0
    script._connection(coalescing).disconnect()  # the socket goes away under it
    coalescing.delete(queued)
    assert script(coalescing, keys=keys, args=args) == 1
