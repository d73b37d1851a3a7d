"""Wire-format helpers shared by the three dialects. No business rule lives here."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import IO, Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from apps.core.errors import ConcurrencyLimitReached, ServiceError
from apps.core.jsonbody import JSONBodyInvalid, json_body_parse, json_body_read
from apps.tasks.services.inputs import Caller

logger = logging.getLogger("apps.protocols")


class LenientJSONParser(BaseParser):
    """JSON whatever the Content-Type says.

    Browser clients of midjourney-proxy and TTAPI sometimes send JSON as ``text/plain`` (to
    avoid a CORS preflight) or with no Content-Type at all; they must work unchanged.
    """

    media_type = "*/*"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            # Bounded (size, values, depth; checked while it is read) and text-checked like
            # every dialect's body.
            raw = json_body_read(stream)
            if not raw or not raw.strip():
                return {}
            return json_body_parse(raw, checked=True)
        except JSONBodyInvalid as exc:
            raise exceptions.ParseError("The request body is not valid JSON.") from exc


def json_object(data: Any) -> dict[str, Any]:
    """The request body as a dict; a JSON array or scalar body is a client error."""
    if isinstance(data, Mapping):
        return dict(data)
    raise exceptions.ParseError("The request body must be a JSON object.")


def text_field(data: Mapping[str, Any], name: str) -> str:
    """A string field; numbers are accepted (clients send task ids as numbers), others refused."""
    value = data.get(name)
    if value is None:
        return ""
    if isinstance(value, bool):
        raise exceptions.ValidationError({name: "Must be a string."})
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise exceptions.ValidationError({name: "Must be a string."})
    return value


def optional_text(data: Mapping[str, Any], name: str) -> str | None:
    return text_field(data, name) if data.get(name) is not None else None


def string_list(data: Mapping[str, Any], name: str) -> list[str]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise exceptions.ValidationError({name: "Must be a list of strings."})
    return list(value)


def bool_field(data: Mapping[str, Any], name: str) -> bool:
    """A yes/no field: JSON true/false (or absent), and "true"/"false" as some clients send."""
    value = data.get(name)
    if value is None or value is False or value == "":
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise exceptions.ValidationError({name: "Must be true or false."})


def state_field(data: Mapping[str, Any]) -> str | None:
    """``state`` is echoed verbatim; a non-string value is kept as its JSON text."""
    value = data.get("state")
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: a path no API route matches answers in its dialect's JSON shape.

    An API client that calls a wrong path (a typo, an endpoint this server does not offer)
    must be able to parse the answer; the dashboard keeps Django's page.
    """
    path = request.path
    message = f"No API endpoint at {path}; see the API documentation at /api/docs/."
    body: dict[str, Any]
    if path.startswith("/api/"):
        body = {"error": {"code": "not_found", "message": message, "details": None}}
    elif path.startswith("/midjourney/"):
        body = {"status": "FAILED", "message": message, "data": None}
    elif path.startswith(("/mj/", "/mj-fast/", "/mj-relax/", "/mj-turbo/")):
        body = {"code": 4, "description": message, "result": None, "properties": {}}
    else:
        return defaults.page_not_found(request, exception or Http404())
    return JsonResponse(body, status=404)


def _api_error_body(path: str, *, code: str, mjproxy_code: int, message: str) -> dict[str, Any]:
    if path.startswith("/midjourney/"):
        return {"status": "FAILED", "message": message, "data": None}
    if path.startswith(("/mj/", "/mj-fast/", "/mj-relax/", "/mj-turbo/")):
        return {"code": mjproxy_code, "description": message, "result": None, "properties": {}}
    return {"error": {"code": code, "message": message, "details": None}}


def _is_api_path(path: str) -> bool:
    return path.startswith(
        ("/api/", "/midjourney/", "/mj/", "/mj-fast/", "/mj-relax/", "/mj-turbo/")
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400``: what Django refuses before a view, in the API dialect's shape.

    mj-proxy answers bad input as a business outcome (HTTP 200, code 4), like its views do.
    """
    if not _is_api_path(request.path):
        return defaults.bad_request(request, exception or Exception())
    message = str(exception or "") or "The request is invalid."
    body = _api_error_body(request.path, code="validation_error", mjproxy_code=4, message=message)
    status = 200 if "code" in body and "description" in body else 400
    return JsonResponse(body, status=status)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: an unhandled error on an API path is JSON in the dialect's shape."""
    if not _is_api_path(request.path):
        return defaults.server_error(request)
    message = "Internal error; the request was not completed."
    return JsonResponse(
        _api_error_body(request.path, code="internal_error", mjproxy_code=9, message=message),
        status=500,
    )


#: The request header that chooses whose upstream accounts run a new task, in every dialect.
POOL_HEADER = "X-Mjgate-Pool"
#: ``POOL_HEADER`` as WSGI names it in ``request.META`` (what ``request.headers`` reads it from;
#: building ``request.headers`` parses every header of the request, once per request).
POOL_META = "HTTP_" + POOL_HEADER.upper().replace("-", "_")


def caller_of(view: Any, protocol: str) -> Caller:
    request = getattr(view, "request", None)
    pool = request.META.get(POOL_META) if request is not None else None
    return Caller(
        organization=view.organization, api_key=view.api_key, protocol=protocol, pool=pool
    )


def first_message(detail: Any) -> str:
    """The first message of a DRF error detail, as ``field: message`` for a field's error.

    The compatible envelopes carry one message string, not the native API's ``details``.
    """
    if isinstance(detail, dict):
        for field, value in detail.items():
            return f"{field}: {first_message(value)}"
    if isinstance(detail, list) and detail:
        return first_message(detail[0])
    return str(detail)


#: Seconds a refused submit over the plan's limit of unfinished tasks is told to wait: about
#: one job's run, after which a slot has usually freed. A hint, not a promise.
TIER_LIMIT_RETRY_AFTER = 15


def with_tier_limit_hint(exc: Exception) -> Exception:
    """A tier-limit refusal says when to retry (``Retry-After``) in every dialect."""
    if isinstance(exc, ConcurrencyLimitReached) and "retry_after" not in exc.details:
        exc.details["retry_after"] = TIER_LIMIT_RETRY_AFTER
    return exc


def with_retry_after(response: Response, exc: ServiceError) -> Response:
    """A tier or rate limit's answer, or an outage's (503), says when to retry, as the native
    API's does."""
    if exc.http_status in (429, 503) and "retry_after" in exc.details:
        response["Retry-After"] = str(exc.details["retry_after"])
    return response


def drf_error_response(
    exc: Exception,
    *,
    envelope: Callable[[str], dict[str, Any]],
    validation_status: int,
) -> Response | None:
    """A compatible dialect's answer to DRF's own exceptions; None for any other exception.

    Both dialects answer these alike but for their envelope (built from the message by
    ``envelope``) and the HTTP status of bad input (``validation_status``).
    """
    if isinstance(exc, exceptions.Throttled):
        wait = int(getattr(exc, "wait", None) or 1)
        response = Response(
            envelope(f"Too many requests for this API key; retry in {wait} seconds."),
            status=429,
        )
        response["Retry-After"] = str(wait)
        return response
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response = Response(envelope(str(exc.detail)), status=401)
        response["WWW-Authenticate"] = 'Bearer realm="mjgate"'
        return response
    if isinstance(exc, exceptions.ValidationError | exceptions.ParseError):
        return Response(envelope(first_message(exc.detail)), status=validation_status)
    if isinstance(exc, exceptions.APIException):
        return Response(envelope(str(exc.detail)), status=exc.status_code)
    return None
