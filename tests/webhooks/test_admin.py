"""Operator admin for webhooks: read-only logs, resend through the service, secrets hidden."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from apps.webhooks.models import DeliveryState, EventState, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import task_event_publish, webhook_secret_ensure

pytestmark = pytest.mark.django_db

ADMIN = "/" + settings.ADMIN_URL


@pytest.fixture
def staff_client() -> Client:
    operator = User.objects.create_superuser(email="ops@example.com", password="pw-123456789")
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def dead_delivery(organization: Any, make_task: Any, monkeypatch: Any) -> WebhookDelivery:
    task = make_task(notify_hook="https://client.example.com/hook")
    [event] = task_event_publish(task=task, event_type="task.updated")
    attempt = event.deliveries.get()
    WebhookDelivery.objects.filter(pk=attempt.pk).update(
        state=DeliveryState.DEAD, status_code=500, error="HTTP 500"
    )
    event.state = EventState.DEAD
    event.save()
    return attempt


def test_resend_action_adds_an_attempt_through_the_service(
    staff_client, dead_delivery, monkeypatch
):
    queued: list[Any] = []
    monkeypatch.setattr("apps.webhooks.tasks.deliver.delay", lambda ids: queued.append(ids))
    url = f"{ADMIN}webhooks/webhookdelivery/"
    response = staff_client.post(
        url, {"action": "resend", "_selected_action": [str(dead_delivery.pk)]}, follow=True
    )
    assert response.status_code == 200
    assert "Resent 1 message(s)." in response.content.decode()
    new = WebhookDelivery.objects.exclude(pk=dead_delivery.pk).get()
    assert (new.attempt, new.trigger, new.state) == (2, "manual", "pending")
    assert new.event_id == dead_delivery.event_id


def test_pages_render_and_never_show_the_secret(staff_client, organization, dead_delivery):
    _, secret = webhook_secret_ensure(organization=organization)
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url="https://e.example.com"
    )
    pages = [
        f"{ADMIN}webhooks/webhookendpoint/",
        f"{ADMIN}webhooks/webhookendpoint/{endpoint.pk}/change/",
        f"{ADMIN}webhooks/webhookdelivery/",
        f"{ADMIN}webhooks/webhookdelivery/{dead_delivery.pk}/change/",
        f"{ADMIN}webhooks/webhookevent/",
        f"{ADMIN}webhooks/webhookevent/{dead_delivery.event_id}/change/",
    ]
    assert secret is not None
    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert secret not in html
        assert secret.removeprefix("whsec_") not in html
    assert staff_client.get(f"{ADMIN}webhooks/webhooksecret/").status_code == 404
