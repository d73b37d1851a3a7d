"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` followed by the base64 of random bytes; the HMAC key is those bytes. The
signature of a message is ``v1,`` + base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}.{body}")), and
``webhook-signature`` carries one such value per valid secret, separated by spaces, so a receiver
holding either the old or the new secret verifies during a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
#: 32 random bytes (the spec asks for 24 to 64).
SECRET_BYTES = 32


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("A webhook secret starts with whsec_.")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def signature_compute(*, secret: str, msg_id: str, timestamp: int, body: str) -> str:
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(*, secrets: Iterable[str], msg_id: str, timestamp: int, body: str) -> str:
    return " ".join(
        signature_compute(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets
    )
