"""Encryption at rest (apps/core/crypto.py): key rotation, fallbacks, `manage.py reencrypt`."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.core.crypto import decrypt_text, encrypt_text, token_is_current
from apps.engines.models import UpstreamAccount
from apps.webhooks.models import WebhookSecret
from apps.webhooks.services import webhook_secret_ensure

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
SECRET_A = "a-first-secret-key-for-signing-0123456789-abcdefghijklmnopqrstuv"
SECRET_B = "b-second-secret-key-for-signing-0123456789-abcdefghijklmnopqrstu"


def test_the_first_key_encrypts_and_every_key_decrypts(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    old_token = encrypt_text("upstream secret")
    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    new_token = encrypt_text("another")
    assert Fernet(NEW.encode()).decrypt(new_token.encode()) == b"another"
    assert decrypt_text(old_token) == "upstream secret"
    assert (token_is_current(old_token), token_is_current(new_token)) == (False, True)
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(ValueError, match="cannot be decrypted"):
        decrypt_text(old_token)


def test_setting_keys_for_the_first_time_keeps_existing_values_readable(settings):
    """Values written before FIELD_ENCRYPTION_KEYS was set use the SECRET_KEY-derived key."""
    settings.FIELD_ENCRYPTION_KEYS = []
    token = encrypt_text("written without keys")
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert decrypt_text(token) == "written without keys"
    assert token_is_current(token) is False
    assert Fernet(NEW.encode()).decrypt(encrypt_text("x").encode()) == b"x"


def test_rotating_secret_key_with_a_fallback_keeps_values_readable(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    settings.SECRET_KEY = SECRET_A
    settings.SECRET_KEY_FALLBACKS = []
    token = encrypt_text("tied to SECRET_KEY")
    settings.SECRET_KEY = SECRET_B
    with pytest.raises(ValueError):
        decrypt_text(token)
    settings.SECRET_KEY_FALLBACKS = [SECRET_A]
    assert decrypt_text(token) == "tied to SECRET_KEY"
    assert token_is_current(token) is False


def test_a_malformed_key_is_a_system_check_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = [NEW, "not-a-fernet-key"]
    errors = [e for e in run_checks() if e.id == "core.E001"]
    assert [e.msg for e in errors] == [
        "FIELD_ENCRYPTION_KEYS entry 2 is not a Fernet key (32 url-safe base64-encoded bytes)."
    ]
    assert "not-a-fernet-key" not in errors[0].msg
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert [e for e in run_checks() if e.id == "core.E001"] == []


def _raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return str(cursor.fetchone()[0])


def _run(*args: str) -> str:
    out = StringIO()
    call_command("reencrypt", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_reencrypt_moves_every_credential_to_the_new_key(settings, organization):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    account = UpstreamAccount.objects.create(
        name="rotation", engine="sandbox", modes=["FAST"], secrets={"secret": "upstream-secret"}
    )
    webhook_secret, plaintext = webhook_secret_ensure(organization=organization)
    assert plaintext is not None
    accounts = UpstreamAccount.objects.count()
    secrets = WebhookSecret.objects.count()
    before = (
        _raw("engines_upstreamaccount", "secrets", account.pk),
        _raw("webhooks_webhooksecret", "secret_encrypted", webhook_secret.pk),
    )

    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    dry = _run("--dry-run")
    assert f"engines.UpstreamAccount.secrets: {accounts} to re-encrypt, 0 already current" in dry
    assert f"webhooks.WebhookSecret.secret_encrypted: {secrets} to re-encrypt" in dry
    after_dry = (
        _raw("engines_upstreamaccount", "secrets", account.pk),
        _raw("webhooks_webhooksecret", "secret_encrypted", webhook_secret.pk),
    )
    assert after_dry == before

    output = _run()
    assert f"engines.UpstreamAccount.secrets: {accounts} re-encrypted, 0 already current" in output
    assert f"webhooks.WebhookSecret.secret_encrypted: {secrets} re-encrypted" in output

    # The old key can go now.
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert UpstreamAccount.objects.get(pk=account.pk).secrets == {"secret": "upstream-secret"}
    assert WebhookSecret.objects.get(pk=webhook_secret.pk).reveal() == plaintext
    again = _run()
    assert f"engines.UpstreamAccount.secrets: 0 re-encrypted, {accounts} already current" in again


@pytest.mark.django_db
def test_reencrypt_leaves_an_unreadable_value_alone_and_fails(settings, organization):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    lost = UpstreamAccount.objects.create(
        name="lost-key", engine="sandbox", modes=["FAST"], secrets={"secret": "gone"}
    )
    raw = _raw("engines_upstreamaccount", "secrets", lost.pk)
    settings.FIELD_ENCRYPTION_KEYS = [NEW]  # OLD was dropped before reencrypt ran
    err = StringIO()
    with pytest.raises(CommandError, match="1 value\\(s\\) could not be decrypted"):
        call_command("reencrypt", stdout=StringIO(), stderr=err)
    assert f"row {lost.pk} cannot be decrypted" in err.getvalue()
    assert _raw("engines_upstreamaccount", "secrets", lost.pk) == raw


@pytest.mark.django_db
def test_reencrypt_covers_the_mfa_secrets_inside_authenticator_data(settings):
    from allauth.mfa.adapter import get_adapter
    from allauth.mfa.models import Authenticator

    from tests.factories import UserFactory

    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    adapter = get_adapter()
    user = UserFactory()
    totp = Authenticator.objects.create(
        user=user, type=Authenticator.Type.TOTP, data={"secret": adapter.encrypt("JBSWY3DP")}
    )
    recovery = Authenticator.objects.create(
        user=user,
        type=Authenticator.Type.RECOVERY_CODES,
        data={
            "seed": adapter.encrypt("ab" * 40),
            "used_mask": 3,
            "migrated_codes": [adapter.encrypt("12345678"), adapter.encrypt("87654321")],
        },
    )
    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    output = _run()
    assert "mfa.Authenticator.data: 4 re-encrypted, 0 already current" in output

    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    totp.refresh_from_db()
    recovery.refresh_from_db()
    assert adapter.decrypt(totp.data["secret"]) == "JBSWY3DP"
    assert adapter.decrypt(recovery.data["seed"]) == "ab" * 40
    assert [adapter.decrypt(c) for c in recovery.data["migrated_codes"]] == [
        "12345678",
        "87654321",
    ]
    assert recovery.data["used_mask"] == 3
    assert "mfa.Authenticator.data: 0 re-encrypted, 4 already current" in _run()
