"""A submit against an organization change it waited for (apps/tasks/services/acceptance.py).

Submits of one organization and the changes of its settings queue on the organization's row
lock; what a submit reads after it got that lock must include what the change it waited for
committed, or the ordering the lock stands for is a fiction.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from apps.tasks.enums import Action
from apps.tasks.services.inputs import ClientEcho
from apps.tasks.services.submit import task_submit
from apps.webhooks import services as webhook_services
from apps.webhooks.models import WebhookEvent
from tests.tasks.conftest import (  # noqa: F401 - fixtures
    caller,
    sent,
)

pytestmark = [pytest.mark.postgres]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "hook",
    [None, "http://127.0.0.1:9/own-hook"],
    ids=["one-statement-acceptance", "transaction-acceptance"],
)
def test_a_submit_waiting_on_an_endpoint_creation_sends_it_task_created(
    caller,  # noqa: F811
    sent,  # noqa: F811
    fund,
    monkeypatch,
    settings,
    hook,
):
    """``acceptance.accept``/``tasks_task_accept`` read "has an enabled endpoint" in the same
    statement that takes the organization's row lock, trusting that "endpoints are created
    under this same organization lock". Under READ COMMITTED that statement's snapshot is taken
    *before* it waits for the lock, so a submit that queued behind ``endpoint_create`` reads
    the endpoint as absent after it committed, and writes no outbox row: the new endpoint never
    gets that task's ``task.created``. Both acceptances: the one statement
    (``tasks_task_accept``, migration ``tasks.0023``) and, with a notify hook of the task's
    own, the transaction (``acceptance._lock_sql``)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    organization = caller.organization
    fund(organization, 1_000_000)
    created, go = threading.Event(), threading.Event()
    ensure = webhook_services.webhook_secret_ensure

    def ensure_after_a_pause(**kwargs):
        if threading.current_thread().name == "endpoint":
            created.set()  # the endpoint row is written, the organization locked, not committed
            go.wait(30)
        return ensure(**kwargs)

    monkeypatch.setattr(webhook_services, "webhook_secret_ensure", ensure_after_a_pause)
    out: dict[str, object] = {}

    def run(name, fn):
        def body() -> None:
            try:
                out[name] = fn()
            except BaseException as exc:  # pragma: no cover - reported below
                out[name] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    endpoint_thread = run(
        "endpoint",
        lambda: (
            webhook_services.endpoint_create(
                organization=organization, url="http://127.0.0.1:9/hook"
            ).endpoint
        ),
    )
    assert created.wait(30), out
    submit_thread = run(
        "submit",
        lambda: task_submit(
            caller=caller,
            action=Action.IMAGINE,
            prompt="a red fox",
            echo=ClientEcho(notify_hook=hook),
        ),
    )
    deadline = time.monotonic() + 30
    waiting = False
    while time.monotonic() < deadline and submit_thread.is_alive():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                waiting = True
                break
        time.sleep(0.01)
    go.set()
    endpoint_thread.join(30)
    submit_thread.join(30)
    assert waiting, "the submit did not wait for the organization lock"
    endpoint, outcome = out["endpoint"], out["submit"]
    assert not isinstance(endpoint, BaseException), endpoint
    assert not isinstance(outcome, BaseException), outcome
    task = outcome.task  # type: ignore[attr-defined]
    assert WebhookEvent.objects.filter(
        task_id=task.pk, endpoint=endpoint, event_type="task.created"
    ).exists(), "the endpoint committed before the submit's read got no task.created"
