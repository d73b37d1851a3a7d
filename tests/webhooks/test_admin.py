"""Operator admin for webhooks: read-only logs, resend through the service, secrets hidden."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from apps.tasks.events import task_changed
from apps.webhooks.models import (
    DeliveryState,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import webhook_secret_ensure

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
    [event] = task_changed(task=task, event_type="task.updated")
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
    monkeypatch.setattr(
        "apps.webhooks.workers.deliver.apply_async", lambda args, **options: queued.append(args[0])
    )
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


def test_the_outbox_and_the_attempt_log_cannot_be_deleted_or_edited(staff_client, dead_delivery):
    event_id = dead_delivery.event_id
    assert staff_client.get(f"{ADMIN}webhooks/webhookevent/{event_id}/delete/").status_code == 403
    response = staff_client.post(
        f"{ADMIN}webhooks/webhookevent/",
        {"action": "delete_selected", "_selected_action": [str(event_id)], "post": "yes"},
    )
    assert response.status_code == 200  # the list again: it offers no delete action
    assert 'value="delete_selected"' not in response.content.decode()
    before = WebhookDelivery.objects.values().get(pk=dead_delivery.pk)
    response = staff_client.post(
        f"{ADMIN}webhooks/webhookdelivery/{dead_delivery.pk}/change/", {"state": "succeeded"}
    )
    assert response.status_code == 403
    assert WebhookDelivery.objects.values().get(pk=dead_delivery.pk) == before
    assert WebhookEvent.objects.filter(pk=event_id).exists()


def test_resend_needs_the_change_permission(dead_delivery):
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user(email="viewer@example.com", password="pw-123456789")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client = Client()
    client.force_login(viewer)
    page = client.get(f"{ADMIN}webhooks/webhookdelivery/")
    assert page.status_code == 200
    assert 'value="resend"' not in page.content.decode()
    client.post(
        f"{ADMIN}webhooks/webhookdelivery/",
        {"action": "resend", "_selected_action": [str(dead_delivery.pk)]},
    )
    assert WebhookDelivery.objects.count() == 1


def test_endpoint_changes_go_through_the_service_and_are_audited(staff_client, organization):
    from datetime import timedelta

    from django.utils import timezone

    from apps.operator.models import AuditEntry

    since = timezone.now() - timedelta(days=6)
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url="https://e.example.com/hook",
        is_enabled=False,
        disabled_reason="Every delivery failed for 5 days.",
        disabled_at=timezone.now(),
        failing_since=since,
    )
    url = f"{ADMIN}webhooks/webhookendpoint/{endpoint.pk}/change/"
    bad = staff_client.post(
        url, {"description": "x", "event_types": '["nope"]', "is_enabled": "on"}
    )
    assert bad.status_code == 200  # the form again, with the error
    assert "A list of event types from" in bad.content.decode()
    response = staff_client.post(
        url,
        {
            "description": "re-enabled by ops",
            "event_types": '["task.succeeded"]',
            "is_enabled": "on",
            "url": "http://127.0.0.1/steal",  # read-only: ignored
        },
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.is_enabled, endpoint.event_types) == (
        "https://e.example.com/hook",
        True,
        ["task.succeeded"],
    )
    # Enabled through endpoint_update: the failure record is cleared, as in the dashboard.
    assert (endpoint.disabled_reason, endpoint.disabled_at, endpoint.failing_since) == (
        "",
        None,
        None,
    )
    entry = AuditEntry.objects.get(action="admin.change", object_id=str(endpoint.pk))
    assert entry.after["is_enabled"] is True
    assert entry.before["is_enabled"] is False
    assert entry.before["failing_since"] is not None and entry.after["failing_since"] is None
