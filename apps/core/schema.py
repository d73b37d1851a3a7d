"""OpenAPI description of API key authentication (drf-spectacular reads it from here)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

_SCHEMES = ["mjApiSecret", "bearerKey", "ttApiKey"]


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
