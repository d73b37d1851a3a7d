"""Every dashboard write by role (apps/accounts/roles.py) and with a forged request (no CSRF
token): refused, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import Invitation, Membership, Organization, Role, User
from apps.accounts.services import invitation_create
from apps.api_keys.models import ApiKey
from apps.api_keys.services import api_key_create
from apps.billing.models import CheckoutSession, TokenPackage
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookSecret
from apps.webhooks.services import endpoint_send_test_event, webhook_secret_ensure
from tests.billing.helpers import new_task, snapshot
from tests.factories import MembershipFactory

from .helpers import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(organization: Organization, owner: User) -> dict[str, Any]:
    """One of everything a dashboard write can touch."""
    key = api_key_create(organization=organization, name="ci").api_key
    endpoint = WebhookEndpoint.objects.create(organization=organization, url="https://e.example")
    webhook_secret_ensure(organization=organization)
    delivery = endpoint_send_test_event(organization=organization, endpoint_id=endpoint.pk)
    invitation, _ = invitation_create(
        actor=owner, organization=organization, email="new@example.com", role=Role.MEMBER
    )
    colleague = MembershipFactory(organization=organization, role=Role.MEMBER)
    package = TokenPackage.objects.create(name="Small", tokens=35_000, price_amount=100)
    task = new_task(
        organization,
        status=Status.SUCCESS,
        prompt="a cat",
        prompt_en="a cat",
        buttons=[{"custom_id": "MJ::JOB::upsample::1::abc", "emoji": "", "label": "U1"}],
    )
    running = new_task(organization, status=Status.IN_PROGRESS)
    return {
        "key": key,
        "endpoint": endpoint,
        "delivery": delivery,
        "invitation": invitation,
        "colleague": colleague,
        "package": package,
        "task": task,
        "running": running,
    }


def state(organization: Organization) -> tuple[Any, ...]:
    """Everything the writes below could change."""
    return (
        list(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at")),
        list(WebhookEndpoint.objects.order_by("pk").values_list("pk", "url", "is_enabled")),
        WebhookEvent.objects.count(),
        list(WebhookDelivery.objects.order_by("pk").values_list("pk", "state", "next_attempt_at")),
        list(WebhookSecret.objects.order_by("pk").values_list("pk", "expires_at")),
        list(Invitation.objects.order_by("pk").values_list("pk", "revoked_at", "accepted_at")),
        list(Membership.objects.order_by("pk").values_list("pk", "role")),
        list(Organization.objects.order_by("pk").values_list("pk", "name")),
        list(Task.objects.order_by("pk").values_list("pk", "status")),
        CheckoutSession.objects.count(),
        snapshot(organization),
    )


def writes(world: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/keys/new/", {"name": "x", "flag_midjourney": "on"}),
        (f"/keys/{world['key'].pk}/revoke/", {}),
        ("/webhooks/endpoints/new/", {"url": "https://x.example/hook"}),
        (f"/webhooks/endpoints/{world['endpoint'].pk}/toggle/", {"enable": "0"}),
        (f"/webhooks/endpoints/{world['endpoint'].pk}/delete/", {}),
        (f"/webhooks/endpoints/{world['endpoint'].pk}/test/", {}),
        (f"/webhooks/deliveries/{world['delivery'].pk}/resend/", {}),
        ("/webhooks/secret/rotate/", {}),
        ("/team/invite/", {"email": "a@example.com", "role": "member"}),
        (f"/team/invitations/{world['invitation'].pk}/revoke/", {}),
        (f"/team/members/{world['colleague'].pk}/role/", {"role": "admin"}),
        ("/billing/buy/", {"package": world["package"].pk}),
        ("/billing/upgrade/", {"tier": "VIP"}),
    ]


# Which writes each role is refused (403), per apps/accounts/roles.py.
REFUSED = {
    Role.MEMBER: {
        "/keys/",
        "/webhooks/",
        "/team/invite/",
        "/team/invitations/",
        "/team/members/",
        "/billing/",
    },
    Role.ADMIN: {"/billing/"},
}


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN])
def test_roles_are_refused_what_they_may_not_do_and_nothing_changes(
    role: str, organization: Organization, world: dict[str, Any], settings: Any
) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_unused"  # payments "on": only the role stops it
    user = MembershipFactory(organization=organization, role=role).user
    client = login(user)
    checked = 0
    for url, data in writes(world):
        if not any(url.startswith(prefix) for prefix in REFUSED[role]):
            continue
        before = state(organization)
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "does not allow this page" in response.content.decode()
        assert state(organization) == before, url
        checked += 1
    assert checked == {Role.MEMBER: 13, Role.ADMIN: 2}[role]


def test_a_member_cannot_remove_someone_else(
    organization: Organization, member: User, world: dict[str, Any]
) -> None:
    before = state(organization)
    response = login(member).post(f"/team/members/{world['colleague'].pk}/remove/", follow=True)
    assert response.status_code == 200
    assert "does not allow this action" in response.content.decode()
    assert state(organization) == before


def test_pages_a_member_sees_offer_no_admin_controls(
    organization: Organization, member: User, admin_user: User, world: dict[str, Any]
) -> None:
    client = login(member)
    assert client.get("/keys/").status_code == 403
    assert client.get("/webhooks/").status_code == 403
    overview = client.get("/").content.decode()
    assert 'href="/keys/"' not in overview and 'href="/webhooks/"' not in overview
    team = client.get("/team/").content.decode()
    assert 'action="/team/invite/"' not in team and "/role/" not in team
    billing = client.get("/billing/").content.decode()
    assert "Only owners can buy tokens and change the plan." in billing
    detail = client.get(f"/tasks/{world['task'].pk}/").content.decode()
    assert "Webhook deliveries" in detail
    admin = login(admin_user).get("/").content.decode()
    assert 'href="/keys/"' in admin and 'href="/webhooks/"' in admin


def test_members_see_where_a_task_webhook_went_but_not_the_url(
    organization: Organization, member: User, admin_user: User
) -> None:
    from apps.tasks.events import task_changed

    WebhookEndpoint.objects.create(
        organization=organization, url="https://hooks.example.com/in?token=s3cr3t"
    )
    task = new_task(organization, status=Status.SUCCESS)
    task_changed(task=task)
    as_member = login(member).get(f"/tasks/{task.pk}/").content.decode()
    assert "hooks.example.com" in as_member and "s3cr3t" not in as_member
    as_admin = login(admin_user).get(f"/tasks/{task.pk}/").content.decode()
    assert "https://hooks.example.com/in?token=s3cr3t" in as_admin


def test_members_see_where_a_tasks_own_hook_points_but_not_the_url(
    organization: Organization, member: User, admin_user: User
) -> None:
    """The per-task hook is masked like an endpoint's URL: either may carry a token."""
    task = new_task(
        organization, status=Status.SUCCESS, notify_hook="https://hooks.example.com/in?token=s3cr3t"
    )
    as_member = login(member).get(f"/tasks/{task.pk}/").content.decode()
    assert "hooks.example.com" in as_member and "s3cr3t" not in as_member
    as_admin = login(admin_user).get(f"/tasks/{task.pk}/").content.decode()
    assert "https://hooks.example.com/in?token=s3cr3t" in as_admin


def test_every_write_needs_the_csrf_token(
    organization: Organization, owner: User, world: dict[str, Any], settings: Any
) -> None:
    settings.STRIPE_SECRET_KEY = "sk_test_unused"
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    task, running = world["task"], world["running"]
    all_writes = [
        *writes(world),
        (f"/team/members/{world['colleague'].pk}/remove/", {}),
        ("/create/", {"action": "IMAGINE", "prompt": "a fox", "mode": "FAST", "test_mode": "on"}),
        (f"/tasks/{task.pk}/action/", {"custom_id": "MJ::JOB::upsample::1::abc"}),
        (f"/tasks/{running.pk}/cancel/", {}),
        (f"/tasks/{task.pk}/input/", {"prompt": "x"}),
        ("/orgs/switch/", {"organization": organization.pk}),
        ("/orgs/new/", {"name": "Forged"}),
        ("/invitations/sometoken/", {}),
    ]
    for url, data in all_writes:
        before = state(organization)
        for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
            response = client.post(url, data, **headers)
            assert response.status_code == 403, url
            assert "CSRF" in response.content.decode(), url
        assert state(organization) == before, url
    assert len(all_writes) == 21
