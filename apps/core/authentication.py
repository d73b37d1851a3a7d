"""API key authentication for every public API surface (SPEC §2)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from apps.api_keys.models import ApiKey
from apps.api_keys.services import ApiKeyRejected, api_key_authenticate

from .net import client_ip

#: Header names (as Django exposes them) that may carry a key, besides Authorization: Bearer.
KEY_HEADERS = ("HTTP_MJ_API_SECRET", "HTTP_TT_API_KEY")


def presented_key(request: Any) -> str | None:
    meta = request.META
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return str(value.strip())
    for header in KEY_HEADERS:
        value = meta.get(header, "").strip()
        if value:
            return str(value)
    return None


class KeyAuthenticationFailed(exceptions.AuthenticationFailed):
    pass


class KeyForbidden(exceptions.PermissionDenied):
    pass


class ApiKeyAuthentication(BaseAuthentication):
    """Binds the request to the key's organization: ``request.auth`` is the ApiKey."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        raw_key = presented_key(request)
        if raw_key is None:
            return None
        try:
            api_key = api_key_authenticate(raw_key=raw_key, client_ip=client_ip(request))
        except ApiKeyRejected as exc:
            if exc.http_status == 403:
                raise KeyForbidden(exc.message, code=exc.code) from exc
            raise KeyAuthenticationFailed(exc.message, code=exc.code) from exc
        return AnonymousUser(), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mjgate"'
