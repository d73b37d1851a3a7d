"""Native v1 webhook API: endpoints, secret, deliveries (SPEC §6.3, §7)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.core import http as outbound
from apps.tasks.events import task_changed
from apps.webhooks.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookSecret,
)
from tests.factories import WebhookEndpointFactory

pytestmark = pytest.mark.django_db

BASE = "/api/v1/webhooks"


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.example.com is a public host; internal.example.com resolves to a private address."""
    real = socket.getaddrinfo
    table = {"hooks.example.com": "93.184.216.34", "internal.example.com": "10.0.0.7"}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def outsider_client(outsider_key: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {outsider_key.plaintext}")
    return client


@pytest.fixture
def read_only_client(organization: Any, make_key: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=make_key(organization, read_only=True).plaintext)
    return client


@pytest.fixture
def endpoint(organization: Any) -> WebhookEndpoint:
    return WebhookEndpointFactory(
        organization=organization,
        url="https://hooks.example.com/mj",
        description="prod",
        event_types=["task.succeeded"],
    )


def snapshot() -> list[Any]:
    """Everything the webhook API can change."""
    return [
        list(WebhookEndpoint.objects.order_by("pk").values()),
        list(WebhookSecret.objects.order_by("pk").values()),
        list(WebhookEvent.objects.order_by("pk").values()),
        list(WebhookDelivery.objects.order_by("pk").values()),
    ]


def test_create_endpoint_returns_the_new_secret_once(key_client, organization):
    response = key_client.post(
        f"{BASE}/endpoints",
        {
            "url": "https://hooks.example.com/mj",
            "description": "production",
            "event_types": ["task.succeeded", "task.failed"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    endpoint = WebhookEndpoint.objects.get()
    assert data["id"] == endpoint.pk
    assert data["url"] == "https://hooks.example.com/mj"
    assert data["description"] == "production"
    assert data["event_types"] == ["task.succeeded", "task.failed"]
    assert data["is_enabled"] is True
    assert data["disabled_reason"] is None
    assert data["secret"].startswith("whsec_")
    assert WebhookSecret.objects.get(organization=organization).reveal() == data["secret"]
    # The stored secret is encrypted.
    assert data["secret"] not in WebhookSecret.objects.values_list("secret_encrypted", flat=True)[0]

    second = key_client.post(
        f"{BASE}/endpoints", {"url": "https://hooks.example.com/other"}, format="json"
    )
    assert second.status_code == 201
    assert second.json()["secret"] is None
    assert second.json()["event_types"] == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://hooks.example.com/", "unsafe_url"),
        ("http://127.0.0.1:8000/hook", "unsafe_url"),
        ("http://169.254.169.254/latest", "unsafe_url"),
        ("http://localhost/hook", "unsafe_url"),
        ("http://2130706433/", "unsafe_url"),
        ("https://internal.example.com/hook", "unsafe_url"),
        ("https://user:pw@hooks.example.com/", "unsafe_url"),
        ("not a url", "unsafe_url"),
    ],
)
def test_create_refuses_unsafe_urls(key_client, settings, url, code):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    before = snapshot()
    response = key_client.post(f"{BASE}/endpoints", {"url": url}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"]["field"] == "url"
    assert snapshot() == before


def test_private_urls_are_allowed_with_the_switch(key_client, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    response = key_client.post(
        f"{BASE}/endpoints", {"url": "http://127.0.0.1:9999/hook"}, format="json"
    )
    assert response.status_code == 201
    # The scheme rule stays.
    response = key_client.post(f"{BASE}/endpoints", {"url": "file:///etc/passwd"}, format="json")
    assert response.status_code == 400


def test_create_validates_event_types_and_description(key_client):
    before = snapshot()
    response = key_client.post(
        f"{BASE}/endpoints",
        {"url": "https://hooks.example.com/", "event_types": ["task.exploded"]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unknown event type 'task.exploded'."
    response = key_client.post(
        f"{BASE}/endpoints",
        {"url": "https://hooks.example.com/", "description": "x" * 201},
        format="json",
    )
    assert response.status_code == 400
    response = key_client.post(f"{BASE}/endpoints", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert snapshot() == before


def test_endpoint_limit(key_client, organization, settings):
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    for n in range(2):
        WebhookEndpoint.objects.create(organization=organization, url=f"https://h{n}.example.com")
    response = key_client.post(
        f"{BASE}/endpoints", {"url": "https://hooks.example.com/"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "endpoint_limit"
    assert WebhookEndpoint.objects.count() == 2


def test_list_get_update_delete(key_client, endpoint, other_organization):
    WebhookEndpoint.objects.create(organization=other_organization, url="https://x.example.com")
    listed = key_client.get(f"{BASE}/endpoints")
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()] == [endpoint.pk]

    got = key_client.get(f"{BASE}/endpoints/{endpoint.pk}")
    assert got.status_code == 200
    assert got.json()["url"] == "https://hooks.example.com/mj"
    assert "secret" not in got.json()

    patched = key_client.patch(
        f"{BASE}/endpoints/{endpoint.pk}",
        {"event_types": [], "is_enabled": False, "description": "paused"},
        format="json",
    )
    assert patched.status_code == 200
    assert patched.json()["event_types"] == []
    assert patched.json()["is_enabled"] is False
    assert patched.json()["disabled_reason"] == "Disabled by the organization."
    assert patched.json()["description"] == "paused"
    assert patched.json()["url"] == "https://hooks.example.com/mj"

    enabled = key_client.patch(
        f"{BASE}/endpoints/{endpoint.pk}", {"is_enabled": True}, format="json"
    )
    assert enabled.json()["is_enabled"] is True
    assert enabled.json()["disabled_reason"] is None
    assert enabled.json()["disabled_at"] is None

    bad = key_client.patch(
        f"{BASE}/endpoints/{endpoint.pk}", {"url": "http://10.0.0.1/"}, format="json"
    )
    assert bad.status_code == 400
    endpoint.refresh_from_db()
    assert endpoint.url == "https://hooks.example.com/mj"

    deleted = key_client.delete(f"{BASE}/endpoints/{endpoint.pk}")
    assert deleted.status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert key_client.get(f"{BASE}/endpoints/{endpoint.pk}").status_code == 404


def test_outsider_gets_404_for_every_endpoint_route_and_changes_nothing(outsider_client, endpoint):
    before = snapshot()
    missing = endpoint.pk + 1000
    for target in (endpoint.pk, missing, "abc"):
        answers = [
            outsider_client.get(f"{BASE}/endpoints/{target}"),
            outsider_client.patch(
                f"{BASE}/endpoints/{target}", {"is_enabled": False}, format="json"
            ),
            outsider_client.delete(f"{BASE}/endpoints/{target}"),
            outsider_client.post(f"{BASE}/endpoints/{target}/test"),
        ]
        for answer in answers:
            assert answer.status_code == 404
            assert answer.json() == {
                "error": {
                    "code": "not_found",
                    "message": "Webhook endpoint not found.",
                    "details": None,
                }
            }
    assert outsider_client.get(f"{BASE}/endpoints").json() == []
    assert snapshot() == before


def test_read_only_key_can_read_but_not_write(read_only_client, endpoint):
    assert read_only_client.get(f"{BASE}/endpoints").status_code == 200
    assert read_only_client.get(f"{BASE}/endpoints/{endpoint.pk}").status_code == 200
    assert read_only_client.get(f"{BASE}/deliveries").status_code == 200
    before = snapshot()
    writes = [
        read_only_client.post(
            f"{BASE}/endpoints", {"url": "https://hooks.example.com/"}, format="json"
        ),
        read_only_client.patch(
            f"{BASE}/endpoints/{endpoint.pk}", {"is_enabled": False}, format="json"
        ),
        read_only_client.delete(f"{BASE}/endpoints/{endpoint.pk}"),
        read_only_client.post(f"{BASE}/endpoints/{endpoint.pk}/test"),
        read_only_client.post(f"{BASE}/secret/rotate"),
    ]
    for answer in writes:
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "permission_denied"
    assert snapshot() == before


def test_unauthenticated_requests_are_refused(api_client, endpoint):
    assert api_client.get(f"{BASE}/endpoints").status_code == 401
    assert api_client.post(f"{BASE}/secret/rotate").status_code == 401


def test_secret_status_and_rotation(key_client, outsider_client, organization, other_organization):
    status = key_client.get(f"{BASE}/secret")
    assert status.json() == {"exists": False, "created_at": None, "previous_expires_at": None}
    first = key_client.post(f"{BASE}/secret/rotate")
    assert first.status_code == 201
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    assert first.json()["previous_expires_at"] is None
    second = key_client.post(f"{BASE}/secret/rotate")
    assert second.json()["secret"] not in (secret, None)
    assert second.json()["previous_expires_at"] is not None
    status = key_client.get(f"{BASE}/secret").json()
    assert status["exists"] is True
    assert "secret" not in status
    # The outsider's rotation is its own organization's business.
    assert outsider_client.get(f"{BASE}/secret").json()["exists"] is False
    outsider_client.post(f"{BASE}/secret/rotate")
    assert WebhookSecret.objects.filter(organization=organization).count() == 2
    assert WebhookSecret.objects.filter(organization=other_organization).count() == 1


def test_send_test_event_queues_a_manual_delivery(key_client, endpoint, monkeypatch):
    queued: list[Any] = []
    monkeypatch.setattr(
        "apps.webhooks.workers.deliver.apply_async", lambda args, **options: queued.append(args[0])
    )
    response = key_client.post(f"{BASE}/endpoints/{endpoint.pk}/test")
    assert response.status_code == 202
    data = response.json()
    delivery = WebhookDelivery.objects.get()
    assert data["id"] == delivery.pk
    assert data["event_type"] == "webhook.test"
    assert data["endpoint"] == endpoint.pk
    assert data["trigger"] == "manual"
    assert data["state"] == "pending"
    assert data["message_id"] == delivery.event.msg_id


@pytest.fixture
def deliveries(organization, endpoint, make_task) -> list[WebhookDelivery]:
    """Three messages to the endpoint and a task hook; the first failed once."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(event_types=[])
    task = make_task(notify_hook="https://hooks.example.com/task")
    events = task_changed(task=task, event_type="task.updated")
    events += task_changed(task=task, event_type="task.succeeded")
    attempts = list(WebhookDelivery.objects.filter(event__in=events).order_by("pk"))
    first = attempts[0]
    first.state = DeliveryState.FAILED
    first.status_code = 500
    first.error = "HTTP 500"
    first.save()
    retry = WebhookDelivery.objects.create(
        organization=organization,
        event=first.event,
        attempt=2,
        next_attempt_at=first.next_attempt_at,
        url=first.url,
    )
    return [*attempts, retry]


def test_deliveries_list_filters_and_paginates(
    key_client, endpoint, deliveries, other_organization
):
    response = key_client.get(f"{BASE}/deliveries")
    assert response.status_code == 200
    ids = [d["id"] for d in response.json()["results"]]
    assert ids == sorted((d.pk for d in deliveries), reverse=True)

    by_endpoint = key_client.get(f"{BASE}/deliveries", {"endpoint": endpoint.pk}).json()
    assert {d["endpoint"] for d in by_endpoint["results"]} == {endpoint.pk}
    assert len(by_endpoint["results"]) == 2
    by_state = key_client.get(f"{BASE}/deliveries", {"state": "failed"}).json()
    assert [d["id"] for d in by_state["results"]] == [deliveries[0].pk]
    assert by_state["results"][0]["status_code"] == 500
    assert by_state["results"][0]["error"] == "HTTP 500"
    task_id = deliveries[0].event.task_id
    by_task = key_client.get(f"{BASE}/deliveries", {"task": task_id}).json()
    assert len(by_task["results"]) == 5

    page = key_client.get(f"{BASE}/deliveries", {"limit": 2}).json()
    assert len(page["results"]) == 2
    seen = [d["id"] for d in page["results"]]
    while page["next"]:
        page = key_client.get(page["next"]).json()
        seen += [d["id"] for d in page["results"]]
    assert seen == ids

    assert key_client.get(f"{BASE}/deliveries", {"cursor": "bogus"}).status_code == 400
    assert key_client.get(f"{BASE}/deliveries", {"state": "weird"}).status_code == 400


def test_delivery_detail_and_resend(key_client, deliveries, monkeypatch):
    queued: list[Any] = []
    monkeypatch.setattr(
        "apps.webhooks.workers.deliver.apply_async", lambda args, **options: queued.append(args[0])
    )
    failed = deliveries[0]
    detail = key_client.get(f"{BASE}/deliveries/{failed.pk}")
    assert detail.status_code == 200
    assert detail.json()["payload"]["id"] == failed.event.task_id
    assert detail.json()["attempt"] == 1

    done = deliveries[1]
    WebhookDelivery.objects.filter(pk=done.pk).update(state=DeliveryState.SUCCEEDED)
    WebhookEvent.objects.filter(pk=done.event_id).update(state="succeeded")
    resent = key_client.post(f"{BASE}/deliveries/{done.pk}/resend")
    assert resent.status_code == 202
    assert resent.json()["attempt"] == 2
    assert resent.json()["trigger"] == "manual"
    assert resent.json()["state"] == "pending"
    assert resent.json()["message_id"] == done.event.msg_id


def test_outsider_gets_404_for_deliveries_and_changes_nothing(
    outsider_client, deliveries, endpoint
):
    before = snapshot()
    assert outsider_client.get(f"{BASE}/deliveries").json()["results"] == []
    assert (
        outsider_client.get(f"{BASE}/deliveries", {"endpoint": endpoint.pk}).json()["results"] == []
    )
    for target in (deliveries[0].pk, 987654, "x"):
        for answer in (
            outsider_client.get(f"{BASE}/deliveries/{target}"),
            outsider_client.post(f"{BASE}/deliveries/{target}/resend"),
        ):
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == "Webhook delivery not found."
    assert snapshot() == before


def test_schema_documents_the_webhook_routes(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for route in (
        "/api/v1/webhooks/endpoints",
        "/api/v1/webhooks/endpoints/{endpoint_id}",
        "/api/v1/webhooks/endpoints/{endpoint_id}/test",
        "/api/v1/webhooks/secret",
        "/api/v1/webhooks/secret/rotate",
        "/api/v1/webhooks/deliveries",
        "/api/v1/webhooks/deliveries/{delivery_id}",
        "/api/v1/webhooks/deliveries/{delivery_id}/resend",
    ):
        assert route in paths
