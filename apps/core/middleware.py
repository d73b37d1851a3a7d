"""CORS for the public API surfaces, and the text guard of every URL.

Browsers call the mj-proxy endpoints directly (chat web UIs), so every ``/mj*`` route, the TTAPI
routes and the native API answer preflights and allow the key headers. Authentication is by
header, never by cookie, so a wildcard origin grants nothing a script could not already do.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse

from .jsonbody import text_is_storable

# Exactly the API route prefixes: a bare "/mj" would also open e.g. an ADMIN_URL of "mjadmin/".
CORS_PATH_PREFIXES = ("/mj/", "/mj-fast/", "/mj-relax/", "/mj-turbo/", "/midjourney/", "/api/")
ALLOWED_HEADERS = "content-type, mj-api-secret, authorization, tt-api-key, idempotency-key"
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


def _is_api_path(path: str) -> bool:
    return path.startswith(CORS_PATH_PREFIXES)


def _add_cors_headers(response: HttpResponse) -> HttpResponse:
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response["Access-Control-Expose-Headers"] = "Retry-After, Idempotent-Replayed"
    response["Access-Control-Max-Age"] = "86400"
    return response


class CompatCorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _is_api_path(request.path):
            return self.get_response(request)
        if request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META:
            return _add_cors_headers(HttpResponse(status=204))
        return _add_cors_headers(self.get_response(request))


class UrlTextGuardMiddleware:
    """Refuse a URL whose path or query carries a NUL character (``/mj/task/%00/fetch``,
    ``/tasks/a%00b/``, an admin change page).

    PostgreSQL cannot store or compare such text: it would reach a query and fail as a server
    error. ``BadRequest`` is answered by ``handler400``: in the dialect's error shape on an API
    path, as Django's 400 page elsewhere.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        texts = [request.path, *request.GET.keys()]
        texts.extend(value for values in request.GET.lists() for value in values[1])
        if not all(text_is_storable(text) for text in texts):
            raise BadRequest("The URL may not contain NUL characters (%00) or unpaired surrogates.")
        return self.get_response(request)
