"""The lean send (apps/core/messaging.py) stores the message Celery's own send would.

Each message the product sends is sent both ways on the test's Redis broker and read back raw
from the list it landed on: the list, the headers, the properties and the body are the same
but for what differs between any two messages (the task id, the delivery tag, the time the
countdown ran from). A Celery or kombu upgrade that changes its message fails here, not in a
worker that cannot read ours. Real workers consume lean messages in every integration test.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import current_app
from celery._state import _task_stack
from django.conf import settings

from apps.core import messaging
from apps.core.messaging import lean_publish_reset, send_now

pytestmark = [pytest.mark.redis]

QUEUE = str(settings.CELERY_TASK_DEFAULT_QUEUE)
OTHER = f"{QUEUE}-lean-other"
#: Every message the product sends, with the options it sends it with.
CASES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "a dispatch": ("tasks.dispatch", (), {}),
    "a contended dispatch, later": ("tasks.dispatch", (), {"countdown": 0.5}),
    "a start": ("tasks.start_job", ("task-1",), {}),
    "a poll, when the job is due": ("tasks.poll_job", ("task-1", "tok"), {"countdown": 1.25}),
    "a finish on the results queue": ("tasks.finish_job", ("task-1", "tok"), {}),
    "a derive at the lowest priority": ("tasks.derive_files", ("task-1",), {"priority": 9}),
    "a priority between steps": ("tasks.derive_files", ("task-1",), {"priority": 4}),
    "webhook deliveries": ("webhooks.deliver", (["ev-1", "ev-2"],), {"countdown": 2}),
    "another queue": ("tasks.finish_job", ("task-1", "tok"), {"queue": OTHER}),
    "a task this process does not know": ("mjgate.not_registered", ("x", 3), {}),
}
_LISTS = [
    f"{name}{suffix}"
    for name in (QUEUE, OTHER)
    for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")
]


@pytest.fixture
def broker() -> Any:
    if not str(settings.CELERY_BROKER_URL).startswith("redis://"):
        pytest.skip("the lean send is for a Redis broker")
    import redis

    # The worker's task registry: each registered task's own options go into its messages.
    import apps.tasks.workers
    import apps.webhooks.workers  # noqa: F401

    client = redis.Redis.from_url(str(settings.CELERY_BROKER_URL))
    client.delete(*_LISTS)
    lean_publish_reset()
    yield client
    client.delete(*_LISTS)
    lean_publish_reset()


def _sent(broker: Any, monkeypatch: pytest.MonkeyPatch, lean: bool, case: str) -> tuple[str, dict]:
    name, args, options = CASES[case]
    monkeypatch.setattr(settings, "LEAN_PUBLISH", lean, raising=False)
    pushed: list[bytes] = []
    original = messaging._lpush

    def counting(app: Any, key: bytes, value: bytes) -> None:
        pushed.append(key)
        original(app, key, value)

    monkeypatch.setattr(messaging, "_lpush", counting)
    messaging.broker_breaker_reset()
    sent_at = datetime.now(tz=datetime.now().astimezone().tzinfo)
    send_now(name, *args, **options)
    assert bool(pushed) == lean, "sent the other way than asked"
    found = [(key, broker.lrange(key, 0, -1)) for key in _LISTS]
    ((key, [raw]),) = [(key, values) for key, values in found if values]
    broker.delete(key)
    return key, _normalised(json.loads(raw), sent_at, options.get("countdown"))


def _normalised(message: dict, sent_at: datetime, countdown: float | None) -> dict:
    headers, properties = message["headers"], message["properties"]
    task_id = headers.pop("id")
    uuid.UUID(task_id)
    assert properties.pop("correlation_id") == task_id
    uuid.UUID(properties.pop("delivery_tag"))
    if headers["root_id"] == task_id:
        headers["root_id"] = "<the task itself>"
    eta = headers.pop("eta")
    if countdown is None:
        assert eta is None
    else:
        due = datetime.fromisoformat(eta) - sent_at
        assert timedelta(seconds=countdown) <= due < timedelta(seconds=countdown + 5)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


@pytest.mark.parametrize("case", list(CASES))
def test_the_lean_message_is_celery_s_message(broker, monkeypatch, case) -> None:
    celery_key, celery_message = _sent(broker, monkeypatch, False, case)
    lean_key, lean_message = _sent(broker, monkeypatch, True, case)
    assert lean_key == celery_key
    assert lean_message == celery_message


def test_inside_a_task_the_message_names_its_parent_and_root(broker, monkeypatch) -> None:
    """Sent from a task a worker runs (a poll step's next poll): Celery names that task the
    message's parent and its root the message's root, and so does the lean send."""
    parent = current_app.tasks["tasks.poll_job"]
    parent.push_request(id="parent-1", root_id="root-1", called_directly=False)
    _task_stack.push(parent)
    try:
        _key, celery_message = _sent(broker, monkeypatch, False, "a poll, when the job is due")
        _key, lean_message = _sent(broker, monkeypatch, True, "a poll, when the job is due")
    finally:
        _task_stack.pop()
        parent.pop_request()
    assert celery_message["headers"]["parent_id"] == "parent-1"
    assert celery_message["headers"]["root_id"] == "root-1"
    assert lean_message == celery_message


def test_a_broken_connection_is_made_afresh_once(broker, monkeypatch) -> None:
    """A restarted Redis leaves the process's connection dead: the send connects again and
    the message goes; only a second failure in a row is the broker's outage."""
    monkeypatch.setattr(settings, "LEAN_PUBLISH", True, raising=False)
    send_now("tasks.start_job", "task-1")
    messaging._lean_local.connection._sock.close()  # the server went away under it
    send_now("tasks.start_job", "task-2")
    stored = [json.loads(raw)["headers"]["argsrepr"] for raw in broker.lrange(QUEUE, 0, -1)]
    assert sorted(stored) == ["('task-1',)", "('task-2',)"]


def test_turned_off_or_on_another_broker_it_is_celery_s_send(broker, monkeypatch) -> None:
    def refuse(*_: Any) -> None:
        raise AssertionError("the lean send ran")

    monkeypatch.setattr(messaging, "_lpush", refuse)
    monkeypatch.setattr(settings, "LEAN_PUBLISH", False, raising=False)
    send_now("tasks.start_job", "task-1")
    monkeypatch.setattr(settings, "LEAN_PUBLISH", True, raising=False)
    monkeypatch.setattr(current_app.conf, "broker_url", "sqla+sqlite:///nowhere.sqlite3")
    assert messaging._lean_send("tasks.start_job", ("task-1",), countdown=None, queue=None,
                                priority=None) is False  # fmt: skip
    assert broker.llen(QUEUE) == 1


def test_a_task_with_its_own_apply_async_is_sent_through_it(broker, monkeypatch) -> None:
    """A replaced ``apply_async`` (a Task subclass, an instrumentation wrapping it, a test's
    record) is what sends that task's messages: the lean send leaves them to it."""
    from apps.tasks import workers

    monkeypatch.setattr(settings, "LEAN_PUBLISH", True, raising=False)
    calls: list[Any] = []
    monkeypatch.setattr(workers.start_job, "apply_async", lambda **kw: calls.append(kw))
    send_now("tasks.start_job", "task-1")
    assert calls == [{"args": ("task-1",)}]
    assert broker.llen(QUEUE) == 0
