"""System checks of the core app: configuration mistakes that would otherwise surface late."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .crypto import key_errors


def check_field_encryption_keys(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """A malformed FIELD_ENCRYPTION_KEYS would only fail when a worker first needs a secret."""
    return [checks.Error(message, id="core.E001") for message in key_errors()]
