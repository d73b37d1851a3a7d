from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core import mail
from django.core.cache import cache
from django.test import Client

from apps.accounts.models import Membership, Organization, Role, User
from apps.billing.models import Balance, EntryKind, LedgerEntry

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-enough-pass-9876"
CONFIRM_LINK = re.compile(r"https?://[^/\s]+(?P<path>/accounts/confirm-email/[^/\s]+/)")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # allauth rate-limits confirmation mails per address in the cache, which outlives a test.
    cache.clear()


def _sign_up(client: Client, email: str = "Alice@Example.com") -> None:
    response = client.post(
        "/accounts/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"


def _log_in(client: Client, email: str = "alice@example.com"):
    return client.post("/accounts/login/", {"login": email, "password": PASSWORD})


def test_signup_creates_user_personal_organization_and_signup_grant():
    assert settings.SIGNUP_GRANT_TOKENS == 70_000
    _sign_up(Client())
    user = User.objects.get()
    assert user.email == "alice@example.com"
    assert user.check_password(PASSWORD)
    membership = Membership.objects.select_related("organization__tier").get(user=user)
    organization = membership.organization
    assert membership.role == Role.OWNER
    assert organization.is_personal is True
    assert organization.name == "alice's workspace"
    assert organization.tier.code == "FREE"
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held) == (70_000, 0)
    entry = LedgerEntry.objects.get(organization=organization)
    assert (entry.kind, entry.delta_available, entry.delta_held) == (
        EntryKind.SIGNUP_GRANT,
        70_000,
        0,
    )


def test_signup_grant_follows_the_setting(settings):
    settings.SIGNUP_GRANT_TOKENS = 1234
    _sign_up(Client(), email="bob@example.com")
    organization = Organization.objects.get(memberships__user__email="bob@example.com")
    assert Balance.objects.get(organization=organization).available == 1234


def test_no_grant_when_the_setting_is_zero(settings):
    settings.SIGNUP_GRANT_TOKENS = 0
    _sign_up(Client(), email="carol@example.com")
    organization = Organization.objects.get(memberships__user__email="carol@example.com")
    assert Balance.objects.get(organization=organization).available == 0
    assert not LedgerEntry.objects.filter(organization=organization).exists()


def test_email_must_be_verified_before_logging_in():
    client = Client()
    _sign_up(client)
    # Mandatory verification: sign-up itself does not log the user in.
    assert "_auth_user_id" not in client.session
    address = EmailAddress.objects.get(email="alice@example.com")
    assert address.verified is False

    fresh = Client()
    response = _log_in(fresh)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert "_auth_user_id" not in fresh.session
    assert EmailAddress.objects.get(email="alice@example.com").verified is False


def test_verifying_through_the_emailed_link_allows_login():
    client = Client()
    _sign_up(client)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject.startswith("[mjgate] ")
    match = CONFIRM_LINK.search(message.body)
    assert match is not None, message.body

    # GET shows a confirmation page only (ACCOUNT_CONFIRM_EMAIL_ON_GET is off); POST confirms.
    assert client.get(match["path"]).status_code == 200
    assert EmailAddress.objects.get(email="alice@example.com").verified is False
    response = client.post(match["path"])
    assert response.status_code == 302
    assert EmailAddress.objects.get(email="alice@example.com").verified is True

    fresh = Client()
    response = _log_in(fresh)
    assert response.status_code == 302
    assert response["Location"] == settings.LOGIN_REDIRECT_URL
    assert fresh.session["_auth_user_id"] == str(User.objects.get().pk)


def test_duplicate_signup_creates_nothing_new():
    _sign_up(Client())
    before = (User.objects.count(), Organization.objects.count(), LedgerEntry.objects.count())
    Client().post(
        "/accounts/signup/",
        {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert (
        User.objects.count(),
        Organization.objects.count(),
        LedgerEntry.objects.count(),
    ) == before


def test_invalid_signup_creates_nothing():
    response = Client().post(
        "/accounts/signup/",
        {"email": "dave@example.com", "password1": PASSWORD, "password2": "different-Pass-1"},
    )
    assert response.status_code == 200
    assert not User.objects.exists()
    assert not Organization.objects.exists()
    assert not Balance.objects.exists()
