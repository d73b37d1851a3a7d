"""Admin actions that write are offered only to staff who may change the rows: Django offers an
action that declares no ``permissions`` to anyone who may view the list."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey
from apps.api_keys.services import api_key_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

#: Actions that only read the selected rows (a CSV export): viewing them is enough.
READ_ONLY_ACTIONS = {"export_csv"}


def _staff_with(*codenames: str) -> Client:
    """A staff operator holding only the named permissions (a read-only support role)."""
    user = UserFactory(email="support@example.com", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_every_writing_action_declares_the_permission_it_needs() -> None:
    undeclared = []
    for model, model_admin in admin.site._registry.items():
        for name in model_admin.actions or ():
            func = getattr(model_admin, name) if isinstance(name, str) else name
            if func.__name__ in READ_ONLY_ACTIONS:
                continue
            if not getattr(func, "allowed_permissions", None):
                undeclared.append(f"{model._meta.label}.{func.__name__}")
    assert undeclared == []


def test_view_only_staff_cannot_revoke_a_tenants_api_key(organization: Organization) -> None:
    key = api_key_create(organization=organization, name="production").api_key
    client = _staff_with("view_apikey")
    page = client.get("/admin/api_keys/apikey/")
    assert page.status_code == 200
    assert b"revoke_keys" not in page.content
    client.post(
        "/admin/api_keys/apikey/", {"action": "revoke_keys", "_selected_action": [str(key.pk)]}
    )
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_staff_who_may_change_keys_revoke_them(organization: Organization) -> None:
    key = api_key_create(organization=organization, name="production").api_key
    client = _staff_with("view_apikey", "change_apikey")
    client.post(
        "/admin/api_keys/apikey/", {"action": "revoke_keys", "_selected_action": [str(key.pk)]}
    )
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


@pytest.mark.parametrize(
    ("codenames", "verified"),
    [(("view_emailaddress",), False), (("view_emailaddress", "change_emailaddress"), True)],
)
def test_marking_an_address_verified_needs_the_change_permission(
    codenames: tuple[str, ...], verified: bool
) -> None:
    victim = UserFactory(email="someone@example.com")
    EmailAddress.objects.filter(user=victim).update(verified=False)
    address = EmailAddress.objects.get(user=victim)
    client = _staff_with(*codenames)
    assert client.get("/admin/account/emailaddress/").status_code == 200
    client.post(
        "/admin/account/emailaddress/",
        {"action": "make_verified", "_selected_action": [str(address.pk)]},
    )
    address.refresh_from_db()
    assert address.verified is verified
