"""OpenAPI description of API key authentication and of the ``Idempotency-Key`` header
(drf-spectacular reads them from here)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter

_SCHEMES = ["mjApiSecret", "bearerKey", "ttApiKey"]

_IDEMPOTENCY_KEY = "Idempotency-Key"
_IDEMPOTENCY_DESCRIPTION = (
    "Retry-safe POST: the same key and body replay the first response (24 h)."
)

#: ``Idempotency-Key`` (``apps.core.idempotency``) for ``extend_schema(parameters=…)``: on every
#: operation whose view records it (its method in the view's ``idempotent_methods``), on none
#: whose view ignores it (a read sent as POST). ``tests/protocols/test_schema_idempotency_header.py``
#: walks the schemas and the URLconf.
IDEMPOTENCY_HEADER = OpenApiParameter(
    _IDEMPOTENCY_KEY,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=_IDEMPOTENCY_DESCRIPTION,
)


def idempotency_header_object() -> dict[str, Any]:
    """``IDEMPOTENCY_HEADER`` as an OpenAPI parameter object, for operations written by hand
    (the compatibility dialects' in ``apps.protocols.openapi_dialects``), as drf-spectacular
    renders it (an optional parameter has no ``required``)."""
    return {
        "in": "header",
        "name": _IDEMPOTENCY_KEY,
        "schema": {"type": "string"},
        "description": _IDEMPOTENCY_DESCRIPTION,
    }


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The key may arrive in any one of three headers, so each is an alternative (OR)."""

    target_class = "apps.core.authentication.ApiKeyAuthentication"
    name = _SCHEMES

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{scheme: []} for scheme in _SCHEMES]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "apiKey", "in": "header", "name": "mj-api-secret"},
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            {"type": "apiKey", "in": "header", "name": "TT-API-KEY"},
        ]
