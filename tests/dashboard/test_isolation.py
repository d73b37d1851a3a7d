"""A member of another organization reaches none of ours by URL: every object type answers 404
(exactly like a missing id) and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from apps.accounts.models import Invitation, Membership, Organization, Role, User
from apps.accounts.services import invitation_create
from apps.api_keys.models import ApiKey
from apps.api_keys.services import api_key_create
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookSecret
from apps.webhooks.services import endpoint_create, endpoint_send_test_event
from tests.billing.helpers import new_task, snapshot

from .helpers import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(organization: Organization, owner: User) -> Task:
    return new_task(
        organization,
        status=Status.SUCCESS,
        prompt="our secret prompt",
        buttons=[{"custom_id": "MJ::JOB::upsample::1::abc", "emoji": "", "label": "U1"}],
    )


def _task_state(task: Task) -> tuple[Any, ...]:
    task.refresh_from_db()
    return (task.status, task.updated_at, Task.objects.count())


@pytest.mark.parametrize(
    ("method", "suffix", "data"),
    [
        ("get", "", {}),
        ("get", "card/", {}),
        ("get", "input/", {}),
        ("post", "action/", {"custom_id": "MJ::JOB::upsample::1::abc"}),
        ("post", "input/", {"prompt": "hijack"}),
        ("post", "cancel/", {}),
    ],
)
def test_task_urls(
    outsider: User,
    organization: Organization,
    task: Task,
    method: str,
    suffix: str,
    data: dict[str, str],
) -> None:
    before, ledger = _task_state(task), snapshot(organization)
    response = getattr(login(outsider), method)(f"/tasks/{task.pk}/{suffix}", data)
    assert response.status_code == 404
    assert b"our secret prompt" not in response.content
    assert _task_state(task) == before
    assert snapshot(organization) == ledger


def test_task_htmx_card_answers_like_a_missing_task(outsider: User, task: Task) -> None:
    client = login(outsider)
    response = client.get(f"/tasks/{task.pk}/card/", HTTP_HX_REQUEST="true")
    missing = client.get("/tasks/1999999999999999/card/", HTTP_HX_REQUEST="true")
    # 286 replaces the polling card and stops polling; foreign and missing look the same.
    assert response.status_code == missing.status_code == 286
    assert response.content == missing.content.replace(b"1999999999999999", task.pk.encode())
    assert b"our secret prompt" not in response.content


def test_lists_show_only_own_tasks(outsider: User, task: Task) -> None:
    client = login(outsider)
    for url in ("/tasks/", "/gallery/", "/", "/create/", "/tasks/?q=secret"):
        response = client.get(url)
        assert response.status_code == 200
        assert b"our secret prompt" not in response.content
        assert task.pk.encode() not in response.content


def test_api_key_revoke(outsider: User, organization: Organization, owner: User) -> None:
    key = api_key_create(organization=organization, name="ours").api_key
    response = login(outsider).post(f"/keys/{key.pk}/revoke/")
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    listing = login(outsider).get("/keys/")
    assert key.prefix.encode() not in listing.content
    assert ApiKey.objects.filter(organization=organization).count() == 1


@pytest.fixture
def endpoint(organization: Organization, settings: Any) -> WebhookEndpoint:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    return endpoint_create(organization=organization, url="http://127.0.0.1:9/ours").endpoint


@pytest.mark.parametrize(
    ("suffix", "data"), [("toggle/", {"enable": "0"}), ("delete/", {}), ("test/", {})]
)
def test_webhook_endpoint(
    outsider: User,
    organization: Organization,
    endpoint: WebhookEndpoint,
    suffix: str,
    data: dict[str, str],
) -> None:
    events = WebhookEvent.objects.count()
    response = login(outsider).post(f"/webhooks/endpoints/{endpoint.pk}/{suffix}", data)
    assert response.status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.is_enabled is True
    assert WebhookEvent.objects.count() == events
    assert b"127.0.0.1:9/ours" not in login(outsider).get("/webhooks/").content


def test_webhook_delivery_resend(
    outsider: User, organization: Organization, endpoint: WebhookEndpoint
) -> None:
    delivery = endpoint_send_test_event(organization=organization, endpoint_id=endpoint.pk)
    attempts = WebhookDelivery.objects.count()
    response = login(outsider).post(f"/webhooks/deliveries/{delivery.pk}/resend/")
    assert response.status_code == 404
    assert WebhookDelivery.objects.count() == attempts


def test_webhook_secret_is_never_shown_to_outsiders(
    outsider: User, owner: User, endpoint: WebhookEndpoint
) -> None:
    ours = login(owner).get("/webhooks/")
    secret = ours.context["secret"]
    assert secret.startswith("whsec_")
    theirs = login(outsider).get("/webhooks/")
    assert theirs.context["secret"].startswith("whsec_")
    assert theirs.context["secret"] != secret
    assert secret.encode() not in theirs.content
    assert WebhookSecret.objects.filter(organization=endpoint.organization).count() == 1


@pytest.mark.parametrize(("suffix", "data"), [("role/", {"role": "owner"}), ("remove/", {})])
def test_membership(
    outsider: User, member: User, organization: Organization, suffix: str, data: dict[str, str]
) -> None:
    membership = Membership.objects.get(user=member, organization=organization)
    response = login(outsider).post(f"/team/members/{membership.pk}/{suffix}", data)
    assert response.status_code == 404
    membership.refresh_from_db()
    assert membership.role == Role.MEMBER
    assert member.email.encode() not in login(outsider).get("/team/").content


def test_invitation_revoke(outsider: User, owner: User, organization: Organization) -> None:
    invitation, _ = invitation_create(
        actor=owner, organization=organization, email="friend@example.com"
    )
    response = login(outsider).post(f"/team/invitations/{invitation.pk}/revoke/")
    assert response.status_code == 404
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert b"friend@example.com" not in login(outsider).get("/team/").content
    assert Invitation.objects.filter(organization=organization).count() == 1
    assert len(mail.outbox) == 0  # sent on commit, which the test transaction never reaches


def test_organization_switch(outsider: User, organization: Organization) -> None:
    client = login(outsider)
    response = client.post("/orgs/switch/", {"organization": organization.pk})
    assert response.status_code == 404
    assert client.session.get("dashboard_organization_id") != organization.pk
    assert b"Acme" not in client.get("/").content


def test_forged_session_organization_is_ignored(
    outsider: User, organization: Organization, other_organization: Organization, fund: Any
) -> None:
    fund(organization, 123_456)
    client = login(outsider)
    session = client.session
    session["dashboard_organization_id"] = organization.pk
    session.save()
    response = client.get("/billing/")
    assert response.status_code == 200
    assert response.context["request"].organization == other_organization
    assert b"123,456" not in response.content
