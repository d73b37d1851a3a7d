from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.models import Invitation, MembershipTier, Organization
from apps.accounts.services import invitation_create
from tests.factories import UserFactory

from .admin_forms import form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    operator = UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    return client


def test_operator_changes_an_organizations_tier(staff_client, organization, owner, member):
    url = f"/admin/accounts/organization/{organization.pk}/change/"
    page = staff_client.get(url)
    assert page.status_code == 200
    data = form_data(page.content.decode(), "organization_form")
    premium = MembershipTier.objects.get(code="PREMIUM")
    assert data["tier"] == [str(MembershipTier.objects.get(code="FREE").pk)]
    data["tier"] = [str(premium.pk)]
    data["_save"] = ["Save"]
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    organization.refresh_from_db()
    assert organization.tier == premium
    assert organization.name == "Acme"
    # The membership inline came back unchanged.
    assert organization.memberships.count() == 2


def test_operator_edits_a_tier_limit(staff_client):
    vip = MembershipTier.objects.get(code="VIP")
    url = f"/admin/accounts/membershiptier/{vip.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "membershiptier_form")
    data["max_unfinished_tasks"] = ["25"]
    data["_save"] = ["Save"]
    assert staff_client.post(url, data).status_code == 302
    vip.refresh_from_db()
    assert vip.max_unfinished_tasks == 25


@pytest.mark.parametrize(
    "path",
    [
        "/admin/accounts/user/",
        "/admin/accounts/organization/",
        "/admin/accounts/membership/",
        "/admin/accounts/membershiptier/",
        "/admin/accounts/invitation/",
    ],
)
def test_changelists_render(staff_client, organization, owner, path):
    assert staff_client.get(path).status_code == 200


def test_invitation_token_hash_is_never_shown(staff_client, organization, owner):
    invitation, token = invitation_create(
        actor=owner, organization=organization, email="new@example.com"
    )
    pages = [
        "/admin/accounts/invitation/",
        f"/admin/accounts/invitation/{invitation.pk}/change/",
        f"/admin/accounts/organization/{organization.pk}/change/",
    ]
    for path in pages:
        response = staff_client.get(path)
        assert response.status_code == 200
        html = response.content.decode()
        assert invitation.token_hash not in html
        assert token not in html
    assert "new@example.com" in staff_client.get(pages[1]).content.decode()
    assert Invitation.objects.get().token_hash == invitation.token_hash


def test_non_staff_users_are_kept_out(organization, owner):
    client = Client()
    client.force_login(owner)
    response = client.get(f"/admin/accounts/organization/{organization.pk}/change/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert Organization.objects.get().tier.code == "FREE"
