"""Encryption at rest for credentials (upstream secrets, webhook signing secrets). Fernet.

Keys: ``FIELD_ENCRYPTION_KEYS`` (comma-separated Fernet keys; the first encrypts, every one
decrypts). Unset, a key derived from ``SECRET_KEY`` encrypts. Keys derived from ``SECRET_KEY``
and each of ``SECRET_KEY_FALLBACKS`` always stay readable (after the configured keys), so
setting ``FIELD_ENCRYPTION_KEYS`` for the first time, or rotating ``SECRET_KEY`` the Django way,
never makes a stored credential unreadable. ``manage.py reencrypt`` then rewrites every stored
value under the current first key, after which the old keys can be dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.db import models

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# ``cryptography.fernet`` is imported where a value is encrypted or decrypted, not with this
# module: loading its Rust extension maps about 10 MiB into a process, and the models that
# declare encrypted columns are imported at boot by every process, many of which never decrypt
# anything (a Celery worker's parent, whose pages every pool process then also maps; issue 15,
# P6).


def _derived_key(secret: str) -> bytes:
    digest = hashlib.sha256(f"mjgate-field-encryption:{secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest)


def configured_keys() -> list[str]:
    return [str(key).strip() for key in getattr(settings, "FIELD_ENCRYPTION_KEYS", []) or []]


def key_errors() -> list[str]:
    """What is wrong with FIELD_ENCRYPTION_KEYS (for the system check), without the keys."""
    from cryptography.fernet import Fernet  # here: ~10 MiB (top of module)

    errors = []
    for position, key in enumerate(configured_keys(), start=1):
        try:
            Fernet(key.encode())
        except (ValueError, binascii.Error):
            errors.append(
                f"FIELD_ENCRYPTION_KEYS entry {position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)."
            )
    return errors


def _keys() -> list[bytes]:
    """Every key, the one that encrypts first; each only once."""
    keys = [key.encode() for key in configured_keys()]
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    keys += [_derived_key(secret) for secret in secrets]
    return list(dict.fromkeys(keys))


def _fernets() -> list[Fernet]:
    from cryptography.fernet import Fernet  # here: ~10 MiB (top of module)

    return [Fernet(key) for key in _keys()]


def encrypt_text(plaintext: str) -> str:
    return _fernets()[0].encrypt(plaintext.encode()).decode()


def decrypt_text(token: str) -> str:
    from cryptography.fernet import InvalidToken, MultiFernet  # here: ~10 MiB (top of module)

    try:
        return MultiFernet(_fernets()).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("The stored secret cannot be decrypted with the configured keys.") from exc


def token_is_current(token: str) -> bool:
    """True when the token is encrypted with the key that encrypts now."""
    from cryptography.fernet import InvalidToken  # here: ~10 MiB (top of module)

    try:
        _fernets()[0].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def token_reencrypt(token: str) -> str:
    """The same plaintext under the current key. ValueError when no key can read it."""
    from cryptography.fernet import InvalidToken, MultiFernet  # here: ~10 MiB (top of module)

    try:
        return MultiFernet(_fernets()).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("The stored secret cannot be decrypted with the configured keys.") from exc


class EncryptedJSONField(models.TextField):
    """A dict stored as one Fernet token. The plaintext never reaches the database."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> dict[str, Any]:
        if not value:
            return {}
        loaded: dict[str, Any] = json.loads(decrypt_text(value))
        return loaded

    def to_python(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        if not value:
            return {}
        loaded: dict[str, Any] = json.loads(decrypt_text(value))
        return loaded

    def get_prep_value(self, value: Any) -> str:
        # No secrets is stored as no token: there is nothing to hide (a token's length shows
        # its plaintext's), and reading such a row then needs no key, no decryption and no
        # ``cryptography`` in the process (a sandbox account is read at every dispatch).
        if not value:
            return ""
        return encrypt_text(json.dumps(value, sort_keys=True))


def encrypted_columns() -> Iterator[tuple[type[models.Model], models.Field[Any, Any]]]:
    """Every column holding Fernet tokens: ``EncryptedJSONField`` columns, and text columns
    whose name ends in ``_encrypted`` (values written with :func:`encrypt_text`)."""
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedJSONField) or (
                isinstance(field, models.TextField) and field.name.endswith("_encrypted")
            ):
                yield model, field
