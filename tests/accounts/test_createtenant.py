from __future__ import annotations

import json
from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.accounts.models import Membership, Organization, Role, User
from apps.api_keys.models import ApiKey
from apps.billing.models import Balance, LedgerEntry

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command("createtenant", *args, stdout=out)
    return out.getvalue()


def _counts() -> tuple[int, ...]:
    return tuple(
        model.objects.count()
        for model in (User, Organization, Membership, ApiKey, Balance, LedgerEntry, EmailAddress)
    )


def test_json_output_and_the_key_works_through_every_header():
    output = _run("--email", "a@example.com", "--tier", "FREE", "--tokens", "100000", "--json")
    data = json.loads(output)
    organization = Organization.objects.get()
    assert data["organization"] == {
        "id": organization.pk,
        "name": "a's workspace",
        "tier": "FREE",
        "tokens": 100000,
    }
    assert data["user"] == "a@example.com"
    api_key = data["api_key"]
    assert api_key.startswith("mjg_live_")

    for headers in (
        {"HTTP_MJ_API_SECRET": api_key},
        {"HTTP_AUTHORIZATION": f"Bearer {api_key}"},
        {"HTTP_TT_API_KEY": api_key},
    ):
        response = APIClient().get("/api/v1/balance", **headers)
        assert response.status_code == 200, headers
        assert response.json() == {"available": 100000, "held": 0}


def test_the_tenant_is_complete():
    data = json.loads(_run("--email", "B@Example.com", "--tier", "vip", "--json"))
    user = User.objects.get()
    assert user.email == "b@example.com"
    assert EmailAddress.objects.get(user=user).verified is True
    membership = Membership.objects.select_related("organization__tier").get(user=user)
    assert membership.role == Role.OWNER
    assert membership.organization.tier.code == "VIP"
    assert data["organization"]["tier"] == "VIP"
    key = ApiKey.objects.get()
    assert key.organization == membership.organization
    assert (key.is_test, key.can_midjourney, key.read_only) == (False, True, False)
    # No --tokens: an empty balance and no sign-up grant (operators decide the amount).
    balance = Balance.objects.get(organization=membership.organization)
    assert (balance.available, balance.held) == (0, 0)
    assert not LedgerEntry.objects.exists()


def test_human_output_shows_the_key_once():
    output = _run("--email", "c@example.com", "--tier", "PREMIUM", "--name", "Studio C")
    organization = Organization.objects.get()
    assert organization.name == "Studio C"
    lines = output.splitlines()
    assert lines[0] == f"Created organization Studio C (id {organization.pk}, tier PREMIUM)."
    assert lines[1].startswith("API key (shown once): mjg_live_")


def test_unknown_tier_is_a_clear_error_and_creates_nothing():
    before = _counts()
    with pytest.raises(CommandError) as excinfo:
        _run("--email", "a@example.com", "--tier", "GOLD", "--tokens", "100")
    assert str(excinfo.value) == "Unknown membership tier 'GOLD'. Use one of: FREE, VIP, PREMIUM."
    assert _counts() == before


def test_duplicate_email_is_a_clear_error_and_creates_nothing():
    _run("--email", "a@example.com", "--tokens", "100")
    before = _counts()
    with pytest.raises(CommandError) as excinfo:
        _run("--email", "A@example.com", "--tokens", "500")
    assert str(excinfo.value) == "A user with the e-mail address a@example.com already exists."
    assert _counts() == before
    assert Balance.objects.get().available == 100


def test_negative_tokens_are_refused_and_create_nothing():
    with pytest.raises(CommandError) as excinfo:
        _run("--email", "a@example.com", "--tokens", "-5")
    assert str(excinfo.value) == "--tokens cannot be negative."
    assert _counts() == (0, 0, 0, 0, 0, 0, 0)


def test_email_is_required():
    with pytest.raises(CommandError):
        _run("--tier", "FREE")
    assert _counts() == (0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("", "An e-mail is required."),
        ("not-an-email", "'not-an-email' is not an e-mail address."),
        ("a@b@example.com", "'a@b@example.com' is not an e-mail address."),
        (f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.com", "at most 254 characters"),
    ],
)
def test_a_malformed_email_is_a_clear_error_and_creates_nothing(email, message):
    with pytest.raises(CommandError) as excinfo:
        _run("--email", email, "--tokens", "100", "--json")
    assert message in str(excinfo.value)
    assert _counts() == (0, 0, 0, 0, 0, 0, 0)
