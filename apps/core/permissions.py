"""Permission checks on API key flags.

Views declare what they need with ``required_key_flags`` (for example ``("midjourney",)``) and
``writes = True`` when they change anything, which read-only keys may not do.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from apps.api_keys.models import ApiKey

FLAG_MESSAGES = {
    "midjourney": "API key lacks the midjourney permission",
    "billing_read": "API key lacks the billing read permission",
}


class MissingKeyFlag(exceptions.PermissionDenied):
    pass


class HasApiKey(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise exceptions.NotAuthenticated(
                "Provide an API key in the mj-api-secret, Authorization: Bearer or "
                "TT-API-KEY header."
            )
        for flag in getattr(view, "required_key_flags", ()):
            if flag not in api_key.scopes():
                raise MissingKeyFlag(
                    FLAG_MESSAGES.get(flag, f"API key lacks the {flag} permission")
                )
        writing = getattr(view, "writes", False) and request.method not in SAFE_METHODS
        if writing and api_key.read_only:
            raise MissingKeyFlag("This API key is read-only and cannot submit or change anything.")
        return True
