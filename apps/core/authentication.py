"""API key authentication for every public API surface (SPEC §2)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from apps.api_keys.models import ApiKey
from apps.api_keys.services import ApiKeyRejected, api_key_authenticate_counted

from .net import client_ip
from .ratelimit import api_rate_limit

#: Header names (as Django exposes them) that may carry a key, besides Authorization: Bearer.
KEY_HEADERS = ("HTTP_MJ_API_SECRET", "HTTP_TT_API_KEY")
#: Every mjgate key starts with this (``mjg_live_…``, ``mjg_test_…``).
KEY_MARK = "mjg_"


class KeyAuthenticationFailed(exceptions.AuthenticationFailed):
    pass


def presented_key(request: Any) -> str | None:
    """The API key a request presents, or None when it presents none.

    The rule when several key headers are present (``mj-api-secret``, ``TT-API-KEY``,
    ``Authorization: Bearer``):

    * Empty values and an ``Authorization`` header of another scheme (Basic, …) do not count.
    * A value that looks like an mjgate key (``mjg_…``) wins over one that does not, so a
      client (or a gateway in front of it) that also sends another service's bearer token
      alongside ``mj-api-secret`` still works.
    * Two *different* mjgate keys are refused (401 ``ambiguous_api_key``): guessing would bill
      one organization for what the caller may have meant for another.
    * Otherwise the first value in the order above is checked (and refused as invalid).
    """
    meta = request.META
    values = [meta.get(header, "").strip() for header in KEY_HEADERS]
    authorization = meta.get("HTTP_AUTHORIZATION", "").split(None, 1)
    if len(authorization) == 2 and authorization[0].lower() == "bearer":
        values.append(authorization[1].strip())
    values = [value for value in values if value]
    if not values:
        return None
    ours = {value for value in values if value.startswith(KEY_MARK)}
    if len(ours) > 1:
        raise KeyAuthenticationFailed(
            "The request carries different API keys in its key headers; send one key.",
            code="ambiguous_api_key",
        )
    return str(ours.pop() if ours else values[0])


class KeyForbidden(exceptions.PermissionDenied):
    pass


class ApiKeyAuthentication(BaseAuthentication):
    """Binds the request to the key's organization: ``request.auth`` is the ApiKey."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        raw_key = presented_key(request)
        if raw_key is None:
            return None
        try:
            api_key, pending = api_key_authenticate_counted(
                raw_key=raw_key, client_ip=client_ip(request), rate_limit=api_rate_limit()
            )
        except ApiKeyRejected as exc:
            if exc.http_status == 403:
                raise KeyForbidden(exc.message, code=exc.code) from exc
            raise KeyAuthenticationFailed(exc.message, code=exc.code) from exc
        # The request's rate-limit count came with the key (one Redis round trip for both):
        # ApiKeyRateThrottle decides on it, and a request refused before that gives it back.
        request.pending_rate_count = pending  # type: ignore[attr-defined]
        return AnonymousUser(), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mjgate"'
