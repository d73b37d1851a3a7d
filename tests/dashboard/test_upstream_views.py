"""The dashboard's Upstream accounts page without a browser: roles, tenancy, write-only
credentials, refusals that change nothing, the fee on the billing page, the key's pool."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import MembershipTier, Organization
from apps.api_keys.models import ApiKey
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Pool
from tests.factories import UpstreamAccountFactory

from .helpers import login

pytestmark = pytest.mark.django_db

FORM = {
    "name": "proxy one",
    "engine": "mjproxy",
    "modes": ["FAST"],
    "concurrency": "3",
    "base_url": "https://mj.example.com",
    "secret": "dashboard-secret-value",
}


def _premium(organization: Organization) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    return organization


def test_an_admin_adds_an_account_whose_secret_never_shows(organization, admin_user: Any) -> None:
    _premium(organization)
    client = login(admin_user)
    response = client.post("/upstream-accounts/new/", FORM, follow=True)
    assert response.status_code == 200
    account = UpstreamAccount.objects.get(owner=organization)
    assert dict(account.secrets) == {"secret": "dashboard-secret-value"}
    assert dict(account.options) == {"base_url": "https://mj.example.com"}
    assert b"dashboard-secret-value" not in response.content
    edit = client.get(f"/upstream-accounts/{account.pk}/")
    assert edit.status_code == 200
    assert b"dashboard-secret-value" not in edit.content
    assert b"Credentials are stored" in edit.content


def test_a_member_can_neither_see_nor_change_accounts(organization, member: Any) -> None:
    _premium(organization)
    account = UpstreamAccountFactory(name="mine", owner=organization)
    client = login(member)
    assert client.get("/upstream-accounts/").status_code == 403
    assert client.post("/upstream-accounts/new/", FORM).status_code == 403
    assert client.post(f"/upstream-accounts/{account.pk}/toggle/").status_code == 403
    assert client.post(f"/upstream-accounts/{account.pk}/delete/").status_code == 403
    account.refresh_from_db()
    assert account.is_enabled
    assert UpstreamAccount.objects.filter(owner=organization).count() == 1


def test_another_organizations_account_is_missing(
    organization, owner: Any, other_organization
) -> None:
    _premium(organization)
    theirs = UpstreamAccountFactory(name="theirs", owner=other_organization)
    shared = UpstreamAccountFactory(name="shared-1")
    client = login(owner)
    for account in (theirs, shared):
        assert client.get(f"/upstream-accounts/{account.pk}/").status_code == 404
        assert client.post(f"/upstream-accounts/{account.pk}/toggle/").status_code == 404
        assert client.post(f"/upstream-accounts/{account.pk}/delete/").status_code == 404
    page = client.get("/upstream-accounts/")
    assert b"theirs" not in page.content and b"shared-1" not in page.content
    assert (
        UpstreamAccount.objects.filter(pk__in=[theirs.pk, shared.pk], is_enabled=True).count() == 2
    )


def test_a_free_plan_is_told_and_a_refused_form_stores_nothing(organization, owner: Any) -> None:
    client = login(owner)
    page = client.get("/upstream-accounts/")
    assert page.status_code == 200
    assert b"Not included in the Free plan" in page.content
    refused = client.post("/upstream-accounts/new/", FORM)
    assert refused.status_code == 400
    assert b"does not include your own upstream accounts" in refused.content
    _premium(organization)
    loopback = client.post("/upstream-accounts/new/", {**FORM, "base_url": "http://127.0.0.1"})
    assert loopback.status_code == 400
    assert not UpstreamAccount.objects.filter(owner=organization).exists()


def test_the_billing_page_shows_the_own_account_fee(organization, owner: Any) -> None:
    client = login(owner)
    assert b"on your own account" not in client.get("/billing/").content
    _premium(organization)
    content = client.get("/billing/").content.decode()
    assert "2,800 on your own account" in content or "2800 on your own account" in content


def test_a_key_gets_a_default_pool(organization, owner: Any) -> None:
    _premium(organization)
    client = login(owner)
    client.post("/keys/new/", {"name": "own key", "can_midjourney": "on", "pool": "own"})
    assert ApiKey.objects.get(organization=organization, name="own key").pool == Pool.OWN
