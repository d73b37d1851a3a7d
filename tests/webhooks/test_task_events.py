"""Task and balance events reach the outbox by plain calls: no ``importlib`` hop, no lazy import."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

import apps
from apps.billing.ledger import ledger_adjust, ledger_topup
from apps.protocols.mjproxy.payloads import queued_task_json as mjproxy_task_json
from apps.protocols.v1.payloads import queued_task_json as native_task_json
from apps.tasks.events import task_changed
from apps.webhooks import workers
from apps.webhooks.models import EventState, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db

APPS_DIR = Path(apps.__file__).parent
EVENT_MODULES = ("tasks/events.py", "billing/events.py", "protocols/hooks.py")


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    sent: list[list[int]] = []
    monkeypatch.setattr(
        workers.deliver, "apply_async", lambda args, **options: sent.append(list(args[0]))
    )
    return sent


@pytest.fixture
def no_importlib(monkeypatch: pytest.MonkeyPatch, queued: list[list[int]]) -> None:
    """Any dynamic import during the test fails it.

    After ``queued``: that fixture makes Celery finalize its app (and autodiscover the entry
    points, which is Celery's own dynamic import), so only our code runs under the ban.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"dynamic import {args!r}")

    monkeypatch.setattr(importlib, "import_module", refuse)
    monkeypatch.setattr(importlib.util, "find_spec", refuse)


@pytest.mark.parametrize("relative", EVENT_MODULES)
def test_event_modules_import_plainly(relative):
    tree = ast.parse((APPS_DIR / relative).read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in imports if isinstance(node, ast.ImportFrom)}
    assert not any(name == "importlib" or name.startswith("importlib.") for name in names)
    nested = [
        sub.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for sub in ast.walk(node)
        if isinstance(sub, ast.Import | ast.ImportFrom)
    ]
    assert nested == []


def test_a_task_event_reaches_the_outbox(
    organization, make_task, no_importlib, queued, django_capture_on_commit_callbacks
):
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url="https://hooks.example.com/org"
    )
    task = make_task(protocol="mjproxy", notify_hook="https://client.example.com/hook")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        events = task_changed(task=task, event_type="task.created")

    hook_event, endpoint_event = events
    assert list(WebhookEvent.objects.order_by("pk")) == [hook_event, endpoint_event]
    # The hook gets the Task JSON of the dialect that created the task, the endpoint the native
    # JSON; both registered by apps.protocols at start-up.
    assert json.loads(hook_event.body) == json.loads(json.dumps(mjproxy_task_json(task)))
    assert json.loads(endpoint_event.body)["data"] == native_task_json(task)
    assert (hook_event.task_id, hook_event.task_status, hook_event.sequence) == (
        task.pk,
        "NOT_START",
        1,
    )
    assert endpoint_event.endpoint == endpoint
    assert all(event.state == EventState.PENDING for event in events)
    # One delivery message, sent after commit through apps.core.messaging.
    assert queued == [[hook_event.pk, endpoint_event.pk]]


def test_the_event_type_follows_the_status_when_not_given(organization, make_task, queued):
    WebhookEndpoint.objects.create(organization=organization, url="https://hooks.example.com/a")
    task = make_task(status="FAILURE", fail_reason="banned prompt")
    [event] = task_changed(task=task)
    assert event.event_type == "task.failed"


def test_nothing_is_queued_when_the_transaction_rolls_back(
    organization, make_task, queued, django_capture_on_commit_callbacks
):
    WebhookEndpoint.objects.create(organization=organization, url="https://hooks.example.com/a")
    task = make_task(notify_hook="https://client.example.com/hook")
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        task_changed(task=task, event_type="task.updated")
        raise RuntimeError("the change failed")
    assert callbacks == []
    assert queued == []
    assert not WebhookEvent.objects.exists()


def test_a_balance_event_reaches_the_outbox(
    organization, settings, no_importlib, queued, django_capture_on_commit_callbacks
):
    settings.BALANCE_LOW_THRESHOLD = 100
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url="https://hooks.example.com/balance",
        event_types=["balance.low"],
    )
    with django_capture_on_commit_callbacks(execute=True):
        ledger_topup(organization=organization, amount=150, idempotency_key="t-1", reason="top-up")
    assert not WebhookEvent.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        ledger_adjust(
            organization=organization,
            amount=-60,
            reason="correction",
            operator=None,
            idempotency_key="a-1",
        )
    [event] = WebhookEvent.objects.all()
    assert (event.endpoint, event.event_type, event.task_id) == (endpoint, "balance.low", None)
    assert json.loads(event.body)["data"] == {
        "organization": organization.pk,
        "available": 90,
        "held": 0,
        "threshold": 100,
    }
    assert queued == [[event.pk]]
