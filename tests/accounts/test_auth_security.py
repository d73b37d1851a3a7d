"""Sign-in surfaces do not tell strangers which addresses have accounts, and repeated failures
are rate-limited per client (behind the configured proxies)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client

from apps.accounts.models import Organization, User
from apps.accounts.provisioning import email_mark_verified
from apps.accounts.services import user_create

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-enough-pass-9876"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice() -> User:
    user = user_create(email="alice@example.com", password=PASSWORD)
    email_mark_verified(user=user)
    return user


def test_password_reset_answers_the_same_for_known_and_unknown_addresses(alice):
    known = Client().post("/accounts/password/reset/", {"email": "alice@example.com"})
    unknown = Client().post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert (known.status_code, unknown.status_code) == (302, 302)
    assert known["Location"] == unknown["Location"] == "/accounts/password/reset/done/"
    # Each address gets a mail; only the account holder's carries a reset link.
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "nobody@example.com"]
    by_address = {m.to[0]: m.body for m in mail.outbox}
    assert "/accounts/password/reset/key/" in by_address["alice@example.com"]
    assert "/accounts/password/reset/key/" not in by_address["nobody@example.com"]


def test_signing_up_with_a_taken_address_looks_like_a_fresh_sign_up(alice):
    taken = Client().post(
        "/accounts/signup/",
        {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    fresh = Client().post(
        "/accounts/signup/",
        {"email": "bob@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert (taken.status_code, fresh.status_code) == (302, 302)
    assert taken["Location"] == fresh["Location"] == "/accounts/confirm-email/"
    assert User.objects.filter(email="alice@example.com").count() == 1
    assert Organization.objects.filter(memberships__user__email="alice@example.com").count() == 1


def test_login_failures_are_rate_limited(alice):
    client = Client()
    for _ in range(5):
        response = client.post(
            "/accounts/login/", {"login": "alice@example.com", "password": "wrong-guess-1"}
        )
        assert response.status_code == 200
        assert "_auth_user_id" not in client.session
    # Even the right password is refused now: guessing cannot go on.
    blocked = client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    assert blocked.status_code in (200, 429)
    assert b"Too many failed login attempts" in blocked.content


def test_rate_limits_tell_clients_behind_the_proxy_apart(settings, alice):
    """allauth must count per forwarded client, not per proxy (TRUSTED_PROXY_COUNT)."""
    settings.TRUSTED_PROXY_COUNT = 1
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/ip"}
    attacker = Client(HTTP_X_FORWARDED_FOR="203.0.113.66", REMOTE_ADDR="10.0.0.2")
    for _ in range(3):
        attacker.post("/accounts/login/", {"login": "x@example.com", "password": "nope-1"})
    refused = attacker.post("/accounts/login/", {"login": "x@example.com", "password": "nope-1"})
    assert b"Too many failed login attempts" in refused.content
    # Another customer through the same proxy is not locked out by the attacker.
    customer = Client(HTTP_X_FORWARDED_FOR="198.51.100.7", REMOTE_ADDR="10.0.0.2")
    response = customer.post(
        "/accounts/login/", {"login": "alice@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert customer.session["_auth_user_id"] == str(alice.pk)
