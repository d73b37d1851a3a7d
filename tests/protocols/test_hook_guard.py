"""A per-task hook that the SSRF guard would never deliver to is refused at submit (SPEC §7).

Every dialect refuses it in its own shape, creates nothing and holds nothing; the guard still
runs again on every delivery, after DNS.
"""

from __future__ import annotations

import pytest

from apps.tasks.enums import Status
from apps.tasks.models import Task

from .conftest import snapshot

pytestmark = pytest.mark.django_db

METADATA = "http://169.254.169.254/latest/meta-data/"
REFUSED = (
    "The notify hook is not allowed: The URL resolves to a private, loopback, link-local or "
    "otherwise non-public address, which is not allowed."
)


@pytest.mark.parametrize(
    "hook", [METADATA, "http://10.0.0.5/hook", "https://[::1]:8443/x", "http://127.0.0.1/"]
)
def test_mjproxy_imagine_refuses_a_private_notify_hook(funded, live_key, client_for, hook):
    before = snapshot(funded)
    response = client_for(live_key).post(
        "/mj/submit/imagine", {"prompt": "a fox", "notifyHook": hook}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"code": 4, "description": REFUSED, "result": None, "properties": {}}
    assert snapshot(funded) == before


def test_mjproxy_action_refuses_localhost(funded, live_key, client_for, finished_imagine):
    grid = finished_imagine()
    custom_id = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    before = snapshot(funded)
    response = client_for(live_key).post(
        "/mj/submit/action",
        {"taskId": grid.pk, "customId": custom_id, "notifyHook": "http://localhost:8080/cb"},
        format="json",
    )
    assert response.json() == {
        "code": 4,
        "description": "The notify hook is not allowed: URLs may not point at localhost.",
        "result": None,
        "properties": {},
    }
    assert snapshot(funded) == before


def test_ttapi_refuses_a_private_hook_url(funded, live_key, client_for):
    before = snapshot(funded)
    response = client_for(live_key).post(
        "/midjourney/v1/imagine", {"prompt": "a fox", "hookUrl": METADATA}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"status": "FAILED", "message": REFUSED, "data": None}
    assert snapshot(funded) == before


def test_native_refuses_a_private_webhook_url(funded, live_key, client_for):
    before = snapshot(funded)
    response = client_for(live_key).post(
        "/api/v1/tasks",
        {"action": "IMAGINE", "prompt": "a fox", "webhook_url": "http://192.168.1.1/hook"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": REFUSED,
            "details": {"field": "webhook_url"},
        }
    }
    assert snapshot(funded) == before


def test_public_and_allowed_private_hooks_are_accepted(settings, funded, live_key, client_for):
    client = client_for(live_key)
    public = client.post(
        "/mj/submit/imagine",
        {"prompt": "a fox", "notifyHook": "https://hooks.example/mj"},
        format="json",
    ).json()
    assert public["code"] in (1, 22)
    assert Task.objects.get(pk=public["result"]).notify_hook == "https://hooks.example/mj"
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # development only
    local = client.post(
        "/mj/submit/imagine",
        {"prompt": "a fox", "notifyHook": "http://127.0.0.1:9000/hook"},
        format="json",
    ).json()
    assert local["code"] in (1, 22)
    assert Task.objects.get(pk=local["result"]).status in (Status.NOT_START, Status.SUBMITTED)
