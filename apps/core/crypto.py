"""Encryption at rest for credentials (upstream secrets). Fernet with key rotation."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


def _fernet() -> MultiFernet:
    keys = list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []) or [])
    if not keys:
        digest = hashlib.sha256(f"mjgate-field-encryption:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def encrypt_text(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
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
        return encrypt_text(json.dumps(value or {}, sort_keys=True))
