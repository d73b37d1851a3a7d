"""Encrypt the MFA secrets allauth stored in clear before ``MFA_ADAPTER`` encrypted them.

The TOTP key (``data["secret"]``), the recovery-code seed (``data["seed"]``) and any migrated
recovery codes get the ``enc:`` form ``apps.accounts.adapters.MFAAdapter`` writes and reads.
Values already in that form are left alone, so running it twice changes nothing.
"""

from django.db import migrations

from apps.core.crypto import decrypt_text, encrypt_text

PREFIX = "enc:"


def _encrypt(value):
    if isinstance(value, str) and value and not value.startswith(PREFIX):
        return PREFIX + encrypt_text(value)
    return value


def _decrypt(value):
    if isinstance(value, str) and value.startswith(PREFIX):
        return decrypt_text(value[len(PREFIX) :])
    return value


def _convert(apps, convert):
    Authenticator = apps.get_model("mfa", "Authenticator")
    for authenticator in Authenticator.objects.filter(type__in=("totp", "recovery_codes")):
        data = dict(authenticator.data or {})
        for key in ("secret", "seed"):
            if key in data:
                data[key] = convert(data[key])
        if isinstance(data.get("migrated_codes"), list):
            data["migrated_codes"] = [convert(code) for code in data["migrated_codes"]]
        if data != authenticator.data:
            Authenticator.objects.filter(pk=authenticator.pk).update(data=data)


def encrypt_secrets(apps, schema_editor):
    _convert(apps, _encrypt)


def decrypt_secrets(apps, schema_editor):
    _convert(apps, _decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("operator", "0001_initial"),
        ("mfa", "0003_authenticator_type_uniq"),
    ]

    operations = [migrations.RunPython(encrypt_secrets, decrypt_secrets)]
