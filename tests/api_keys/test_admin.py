from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey
from tests.accounts.admin_forms import form_data
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/api_keys/apikey/"


@pytest.fixture
def staff_client() -> Client:
    operator = UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    return client


def _balance_status(plaintext: str) -> int:
    return APIClient().get("/api/v1/balance", HTTP_MJ_API_SECRET=plaintext).status_code


def test_operator_revokes_keys_with_the_admin_action(staff_client, organization, make_key):
    first, second, kept = (make_key(organization, name=n) for n in ("one", "two", "kept"))
    assert _balance_status(first.plaintext) == 200
    response = staff_client.post(
        CHANGELIST,
        {
            "action": "revoke_keys",
            "_selected_action": [first.api_key.pk, second.api_key.pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 2 key(s)." in response.content.decode()
    revoked = dict(ApiKey.objects.values_list("name", "revoked_at"))
    assert revoked["one"] is not None
    assert revoked["two"] is not None
    assert revoked["kept"] is None
    # Effective immediately: the very next request with the key is refused.
    assert _balance_status(first.plaintext) == 401
    assert _balance_status(second.plaintext) == 401
    assert _balance_status(kept.plaintext) == 200


def test_revoking_an_already_revoked_key_keeps_its_revocation_time(
    staff_client, organization, make_key
):
    issued = make_key(organization)
    staff_client.post(
        CHANGELIST, {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]}
    )
    first_time = ApiKey.objects.get().revoked_at
    response = staff_client.post(
        CHANGELIST,
        {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]},
        follow=True,
    )
    assert "Revoked 0 key(s)." in response.content.decode()
    assert ApiKey.objects.get().revoked_at == first_time


def test_key_hash_never_appears_in_the_admin(staff_client, organization, owner, make_key):
    issued = make_key(organization, name="visible name")
    api_key = issued.api_key
    pages = [
        CHANGELIST,
        f"{CHANGELIST}?q={api_key.prefix}",
        f"{CHANGELIST}{api_key.pk}/change/",
        f"{CHANGELIST}{api_key.pk}/history/",
        f"{CHANGELIST}{api_key.pk}/delete/",
        f"/admin/accounts/organization/{organization.pk}/change/",
        f"/admin/accounts/user/{owner.pk}/change/",
    ]
    for path in pages:
        response = staff_client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert api_key.key_hash not in html, path
        assert issued.plaintext not in html, path
    change_page = staff_client.get(f"{CHANGELIST}{api_key.pk}/change/").content.decode()
    assert "visible name" in change_page
    assert api_key.prefix in change_page
    assert 'name="key_hash"' not in change_page


def test_operator_edits_flags_but_not_the_hash(staff_client, organization, make_key):
    issued = make_key(organization)
    url = f"{CHANGELIST}{issued.api_key.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "apikey_form")
    assert "key_hash" not in data
    assert "prefix" not in data
    data.pop("can_midjourney", None)  # untick the checkbox
    data["key_hash"] = ["0" * 64]
    data["prefix"] = ["mjg_live_hacked"]
    data["_save"] = ["Save"]
    response = staff_client.post(url, data)
    assert response.status_code == 302
    stored = ApiKey.objects.get()
    assert stored.can_midjourney is False
    assert stored.key_hash == issued.api_key.key_hash
    assert stored.prefix == issued.api_key.prefix
    assert _balance_status(issued.plaintext) == 200


def test_operators_cannot_mint_keys_in_the_admin(staff_client):
    assert staff_client.get(f"{CHANGELIST}add/").status_code == 403
