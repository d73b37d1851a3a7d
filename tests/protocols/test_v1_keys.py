"""Native v1 API keys: list, create (secret once), get, update, revoke; no escalation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.api_keys.models import ApiKey

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/keys"


def test_create_shows_the_secret_once_and_it_works(organization, live_key, client_for):
    client = client_for(live_key)
    created = client.post(
        KEYS, {"name": "ci", "read_only": True, "allowed_ips": ["10.0.0.0/8"]}, format="json"
    )
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("mjg_live_")
    assert body["prefix"] == body["secret"][: len(body["prefix"])]
    assert (body["name"], body["read_only"], body["midjourney"], body["allowed_ips"]) == (
        "ci",
        True,
        True,
        ["10.0.0.0/8"],
    )
    fetched = client.get(f"{KEYS}/{body['id']}").json()
    assert "secret" not in fetched
    assert fetched["id"] == body["id"]
    listed = client.get(KEYS).json()
    assert {k["id"] for k in listed} == {live_key.api_key.pk, body["id"]}
    assert all("secret" not in k for k in listed)
    new_client = client_for(live_key)
    new_client.credentials(HTTP_MJ_API_SECRET=body["secret"], REMOTE_ADDR="10.1.1.1")
    assert new_client.get("/api/v1/balance").status_code == 200


def test_update_and_revoke(organization, live_key, make_key, client_for):
    other = make_key(organization, name="old")
    client = client_for(live_key)
    updated = client.patch(
        f"{KEYS}/{other.api_key.pk}", {"name": "new", "billing_read": False}, format="json"
    )
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["billing_read"]) == ("new", False)
    revoked = client.delete(f"{KEYS}/{other.api_key.pk}")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked_at"] is not None
    assert client_for(other).get("/api/v1/tasks").status_code == 401
    again = client.patch(f"{KEYS}/{other.api_key.pk}", {"name": "x"}, format="json")
    assert again.status_code == 400


def test_keys_cannot_escalate(organization, make_key, client_for):
    soon = timezone.now() + timedelta(days=1)
    limited = make_key(
        organization,
        can_read_billing=False,
        allowed_ips=["10.0.0.0/8"],
        expires_at=soon,
    )
    client = client_for(limited)
    client.credentials(HTTP_MJ_API_SECRET=limited.plaintext, REMOTE_ADDR="10.0.0.1")
    before = ApiKey.objects.count()
    cases = [
        ({"name": "x"}, "A key cannot grant the billing read permission it lacks itself."),
        (
            {"name": "x", "billing_read": False, "allowed_ips": ["0.0.0.0/0"]},
            "The IP allow-list must stay within this key's own allow-list.",
        ),
        (
            {
                "name": "x",
                "billing_read": False,
                "expires_at": (soon + timedelta(days=1)).isoformat(),
            },
            "The expiry cannot be later than this key's own expiry.",
        ),
    ]
    for body, message in cases:
        response = client.post(KEYS, body, format="json")
        assert response.status_code == 403, body
        assert response.json()["error"]["message"] == message
    assert ApiKey.objects.count() == before
    inherited = client.post(KEYS, {"name": "child", "billing_read": False}, format="json").json()
    child = ApiKey.objects.get(pk=inherited["id"])
    assert (child.allowed_ips, child.expires_at) == (["10.0.0.0/8"], soon)
    widen = client.patch(f"{KEYS}/{child.pk}", {"allowed_ips": []}, format="json")
    assert widen.status_code == 403
    child.refresh_from_db()
    assert child.allowed_ips == ["10.0.0.0/8"]


def test_test_keys_only_manage_test_keys(organization, test_mode_key, live_key, client_for):
    client = client_for(test_mode_key)
    live = client.post(KEYS, {"name": "live"}, format="json")
    assert live.status_code == 403
    assert live.json()["error"]["message"] == "A test API key can only manage test keys."
    assert client.delete(f"{KEYS}/{live_key.api_key.pk}").status_code == 403
    assert ApiKey.objects.get(pk=live_key.api_key.pk).revoked_at is None
    test = client.post(KEYS, {"name": "t", "is_test": True}, format="json")
    assert test.status_code == 201
    assert test.json()["secret"].startswith("mjg_test_")


def test_read_only_key_reads_but_cannot_manage(organization, make_key, client_for):
    read_only = make_key(organization, read_only=True)
    client = client_for(read_only)
    assert client.get(KEYS).status_code == 200
    before = ApiKey.objects.count()
    assert client.post(KEYS, {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"{KEYS}/{read_only.api_key.pk}").status_code == 403
    assert ApiKey.objects.count() == before
    assert ApiKey.objects.get(pk=read_only.api_key.pk).revoked_at is None


def test_foreign_key_is_404_and_unchanged(organization, live_key, outsider_key, client_for):
    client = client_for(live_key)
    theirs = outsider_key.api_key.pk
    for method in ("get", "patch", "delete"):
        body = None if method == "get" else {"name": "pwned"}  # a GET takes no query string
        foreign = getattr(client, method)(f"{KEYS}/{theirs}", body, format="json")
        missing = getattr(client, method)(f"{KEYS}/999999999", body, format="json")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
    other = ApiKey.objects.get(pk=theirs)
    assert (other.name, other.revoked_at) == ("test key", None)
    assert theirs not in [k["id"] for k in client.get(KEYS).json()]


def test_patch_null_clears_the_expiry_and_the_allow_list(
    organization, live_key, make_key, client_for
):
    soon = timezone.now() + timedelta(days=3)
    other = make_key(organization, allowed_ips=["10.0.0.0/8"], expires_at=soon)
    client = client_for(live_key)
    url = f"{KEYS}/{other.api_key.pk}"

    renamed = client.patch(url, {"name": "renamed"}, format="json").json()
    assert (renamed["allowed_ips"], renamed["expires_at"]) == (
        ["10.0.0.0/8"],
        soon.isoformat().replace("+00:00", "Z"),
    )

    cleared = client.patch(url, {"expires_at": None}, format="json")
    assert cleared.status_code == 200
    assert (cleared.json()["expires_at"], cleared.json()["allowed_ips"]) == (None, ["10.0.0.0/8"])
    stored = ApiKey.objects.get(pk=other.api_key.pk)
    assert (stored.expires_at, stored.allowed_ips, stored.name) == (None, ["10.0.0.0/8"], "renamed")

    opened = client.patch(url, {"allowed_ips": None}, format="json")
    assert opened.status_code == 200
    assert opened.json()["allowed_ips"] == []
    assert ApiKey.objects.get(pk=other.api_key.pk).allowed_ips == []
    # The key now works from anywhere, for good.
    anywhere = client_for(other)
    anywhere.credentials(HTTP_MJ_API_SECRET=other.plaintext, REMOTE_ADDR="192.0.2.7")
    assert anywhere.get("/api/v1/balance").status_code == 200


def test_a_restricted_key_cannot_lift_its_restrictions_from_another(
    organization, make_key, client_for
):
    soon = timezone.now() + timedelta(days=1)
    caller = make_key(organization, allowed_ips=["10.0.0.0/8"], expires_at=soon)
    target = make_key(organization, allowed_ips=["10.1.0.0/16"], expires_at=soon)
    client = client_for(caller)
    client.credentials(HTTP_MJ_API_SECRET=caller.plaintext, REMOTE_ADDR="10.0.0.1")
    url = f"{KEYS}/{target.api_key.pk}"
    for body, message in (
        ({"expires_at": None}, "The expiry cannot be later than this key's own expiry."),
        ({"allowed_ips": None}, "The IP allow-list must stay within this key's own allow-list."),
    ):
        response = client.patch(url, body, format="json")
        assert response.status_code == 403, body
        assert response.json()["error"]["message"] == message
    stored = ApiKey.objects.get(pk=target.api_key.pk)
    assert (stored.expires_at, stored.allowed_ips) == (soon, ["10.1.0.0/16"])


def test_outsider_cannot_clear_a_foreign_expiry(organization, live_key, outsider_key, client_for):
    soon = timezone.now() + timedelta(days=2)
    ApiKey.objects.filter(pk=outsider_key.api_key.pk).update(expires_at=soon)
    response = client_for(live_key).patch(
        f"{KEYS}/{outsider_key.api_key.pk}", {"expires_at": None}, format="json"
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "API key not found.", "details": None}
    }
    assert ApiKey.objects.get(pk=outsider_key.api_key.pk).expires_at == soon
