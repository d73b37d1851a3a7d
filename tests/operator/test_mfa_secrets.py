"""MFA secrets are encrypted at rest (MFA_ADAPTER), and logging in with TOTP still works."""

from __future__ import annotations

import importlib
import time

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.adapter import get_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    SECRET_SESSION_KEY,
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
)
from django.apps import apps as django_apps
from django.db import connection
from django.test import Client

from apps.accounts.adapters import MFAAdapter
from tests.factories import UserFactory

from .conftest import admin_url

pytestmark = pytest.mark.django_db

PASSWORD = "pass-1234-word"  # the factory's


def code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def stored_data(pk: int) -> str:
    """The column as the database holds it, past any ORM conversion."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT data FROM mfa_authenticator WHERE id = %s", [pk])
        (value,) = cursor.fetchone()
    return value if isinstance(value, str) else str(value)


def wait_for_a_fresh_period() -> None:
    # A code is accepted once per 30 s period: don't straddle a boundary mid-test.
    if int(time.time()) % 30 > 25:
        time.sleep(30 - int(time.time()) % 30 + 0.2)


def test_the_adapter_is_configured_and_round_trips():
    adapter = get_adapter()
    assert isinstance(adapter, MFAAdapter)
    secret = generate_totp_secret()
    sealed = adapter.encrypt(secret)
    assert sealed.startswith("enc:") and secret not in sealed
    assert adapter.decrypt(sealed) == secret
    # A value stored before the adapter existed still reads as it is.
    assert adapter.decrypt(secret) == secret


def test_totp_activated_through_allauth_is_stored_encrypted_and_login_with_it_works(settings):
    settings.ADMIN_REQUIRE_MFA = True
    wait_for_a_fresh_period()
    operator = UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)
    assert EmailAddress.objects.get(user=operator).verified  # allauth requires it for MFA
    client = Client()
    response = client.post("/accounts/login/", {"login": operator.email, "password": PASSWORD})
    assert response.status_code == 302
    # Staff without a second factor are sent to set one up.
    assert client.get(admin_url("index"))["Location"].startswith("/accounts/2fa/totp/activate/")

    page = client.get("/accounts/2fa/totp/activate/")
    assert page["Location"].startswith("/accounts/reauthenticate/")  # allauth asks again
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post("/accounts/2fa/totp/activate/", {"code": code(secret)})
    assert response.status_code == 302
    totp = Authenticator.objects.get(user=operator, type=Authenticator.Type.TOTP)
    raw = stored_data(totp.pk)
    assert secret not in raw and secret.lower() not in raw
    assert totp.data["secret"].startswith("enc:")
    assert get_adapter().decrypt(totp.data["secret"]) == secret
    # The recovery codes allauth generated alongside are sealed the same way.
    recovery = Authenticator.objects.get(user=operator, type=Authenticator.Type.RECOVERY_CODES)
    seed = get_adapter().decrypt(recovery.data["seed"])
    assert recovery.data["seed"].startswith("enc:") and seed not in stored_data(recovery.pk)
    assert len(RecoveryCodes(recovery).get_unused_codes()) == 10

    # Log out and in again: the second step accepts the current code, refuses a wrong one.
    client.post("/accounts/logout/")
    response = client.post("/accounts/login/", {"login": operator.email, "password": PASSWORD})
    assert response["Location"] == "/accounts/2fa/authenticate/"
    wrong = format_hotp_value((int(code(secret)) + 1) % 10**6)
    assert client.post("/accounts/2fa/authenticate/", {"code": wrong}).status_code == 200
    assert "_auth_user_id" not in client.session
    response = client.post("/accounts/2fa/authenticate/", {"code": code(secret)})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(operator.pk)
    assert client.get(admin_url("index")).status_code == 200


def test_the_migration_encrypts_secrets_stored_in_clear_and_they_still_work():
    migration = importlib.import_module("apps.operator.migrations.0002_encrypt_mfa_secrets")
    user = UserFactory()
    secret = generate_totp_secret()
    totp = Authenticator.objects.create(
        user=user, type=Authenticator.Type.TOTP, data={"secret": secret}
    )
    recovery = Authenticator.objects.create(
        user=user,
        type=Authenticator.Type.RECOVERY_CODES,
        data={"seed": "ab" * 40, "used_mask": 0, "migrated_codes": ["12345678"]},
    )
    codes_before = RecoveryCodes(recovery).get_unused_codes()
    assert codes_before == ["12345678"]
    migration.encrypt_secrets(django_apps, None)
    migration.encrypt_secrets(django_apps, None)  # twice: no double encryption
    totp.refresh_from_db()
    recovery.refresh_from_db()
    assert secret not in stored_data(totp.pk)
    assert "ab" * 40 not in stored_data(recovery.pk) and "12345678" not in stored_data(recovery.pk)
    assert get_adapter().decrypt(totp.data["secret"]) == secret
    assert RecoveryCodes(recovery).get_unused_codes() == codes_before
    assert recovery.data["used_mask"] == 0
    wait_for_a_fresh_period()
    assert TOTP(totp).validate_code(code(secret))
    migration.decrypt_secrets(django_apps, None)  # reversible
    totp.refresh_from_db()
    assert totp.data == {"secret": secret}
