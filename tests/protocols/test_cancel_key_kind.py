"""A key cancels only tasks of its own kind (test or live), as presses and modal steps do.

A free test key must not stop a paid live task of its organization (nor a live key a test
one); the refusal is the presses' own ("use a key of the same kind"), in each dialect's format,
and leaves the task, its hold and the balance as they were. The dashboard is not a key and
cancels any task of the organization (tests/dashboard).
"""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.enums import Status
from apps.tasks.models import Task

from .conftest import snapshot

pytestmark = pytest.mark.django_db

MIXED = "Test-mode and live tasks cannot be mixed: use a key of the same kind as the task."


def _imagine(client) -> str:
    answer = client.post("/mj/submit/imagine", {"prompt": "a paid fox"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["code"] in (1, 22), answer.json()
    task = Task.objects.get(pk=answer.json()["result"])
    assert not task.is_terminal
    return task.pk


def test_mjproxy_test_key_cannot_cancel_a_live_task(funded, live_key, test_mode_key, client_for):
    live = _imagine(client_for(live_key))
    assert balance_get(organization=funded).held > 0
    before = snapshot(funded)

    answer = client_for(test_mode_key).post(f"/mj/task/{live}/cancel")

    assert answer.status_code == 200
    assert answer.json() == {
        "code": 4,
        "description": MIXED,
        "result": None,
        "properties": {},
    }
    assert Task.objects.get(pk=live).status == Status.NOT_START
    assert snapshot(funded) == before
    cancelled = client_for(live_key).post(f"/mj/task/{live}/cancel")
    assert cancelled.json()["code"] == 1
    assert Task.objects.get(pk=live).status == Status.CANCEL


def test_native_test_key_cannot_cancel_a_live_task(funded, live_key, test_mode_key, client_for):
    live = _imagine(client_for(live_key))
    before = snapshot(funded)

    answer = client_for(test_mode_key).post(f"/api/v1/tasks/{live}/cancel")

    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "code": "validation_error",
            "message": MIXED,
            "details": {"field": "task_id"},
        }
    }
    assert Task.objects.get(pk=live).status == Status.NOT_START
    assert snapshot(funded) == before


@pytest.mark.parametrize("route", ["/mj/task/{id}/cancel", "/api/v1/tasks/{id}/cancel"])
def test_live_key_cannot_cancel_a_test_task(route, funded, live_key, test_mode_key, client_for):
    test_task = _imagine(client_for(test_mode_key))
    status = Task.objects.get(pk=test_task).status
    before = snapshot(funded)

    client_for(live_key).post(route.format(id=test_task))

    assert Task.objects.get(pk=test_task).status == status
    assert snapshot(funded) == before
    # Its own kind of key still cancels it.
    client_for(test_mode_key).post(route.format(id=test_task))
    assert Task.objects.get(pk=test_task).status == Status.CANCEL
