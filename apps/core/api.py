"""Base API view and the native error format (SPEC §6.3)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis.exceptions
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey

from .errors import ServiceError, ServiceUnavailable, ValidationFailed
from .idempotency import IdempotentPostMixin
from .jsonbody import JSONBodyParser
from .ratelimit import RequestSizeLimitMixin, pending_count_give_back

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _drf_code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return "validation_error" if isinstance(exc, exceptions.ValidationError) else "error"


def native_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as ``{"error": {"code", "message", "details"}}`` with the right status,
    unexpected ones included (500 ``internal_error``): an API client never gets an HTML page."""
    exc = infrastructure_error(exc) or exc
    if isinstance(exc, ServiceError):
        response = Response(error_body(exc.code, exc.message, exc.details or None), exc.http_status)
        if exc.http_status in (429, 503) and "retry_after" in exc.details:
            response["Retry-After"] = str(exc.details["retry_after"])
        return response
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Not found."), status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        if isinstance(exc, exceptions.ValidationError):
            message = "The request is invalid."
            details: Any = exc.detail
        else:
            message = str(exc.detail)
            details = None
        response = Response(error_body(_drf_code(exc), message, details), exc.status_code)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            response["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait is not None:
            response["Retry-After"] = str(int(wait) + 1)
        return response
    logger.exception("API request failed", exc_info=exc)
    return Response(
        error_body("internal_error", "Internal error; the request was not completed."),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


#: Failures of the infrastructure under a request: answered 503 "retry later" in the dialect's
#: shape (never a 500 page). A Redis outage reaches here only if something on the request path
#: still needs Redis; the rate limiter and the Celery sender fail open.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def infrastructure_error(exc: Exception) -> ServiceError | None:
    """The dialect-neutral answer to an exception that is not the client's nor a bug's fault."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return ServiceUnavailable(
            "A backing service is temporarily unavailable; retry in a few seconds.",
            details={"retry_after": 5},
        )
    if isinstance(exc, DataError):
        # The last line behind the input checks: a value the database cannot store is the
        # client's (bad input), not a server error.
        return ValidationFailed("The request contains a value that cannot be stored.")
    return None


class OrganizationAPIView(IdempotentPostMixin, RequestSizeLimitMixin, APIView):
    """Base for every key-authenticated endpoint.

    The organization comes from the authenticated key and nowhere else: there is no queryset to
    override, and every selector a subclass calls takes ``organization=`` as a required keyword.
    POSTs honour ``Idempotency-Key`` (see ``apps.core.idempotency``); an oversized body is
    refused before it is read (``apps.core.ratelimit``), so the size check sits below the
    idempotency mixin, which reads the body for its fingerprint.
    """

    required_key_flags: tuple[str, ...] = ()
    writes: bool = False
    parser_classes = [JSONBodyParser]
    #: The query-string parameters a GET of this view reads. Any other is refused with a
    #: validation error naming it, in the dialect's envelope, rather than ignored (a filter
    #: misspelt must not silently list everything).
    query_params: tuple[str, ...] = ()

    def _bind_api_key(self, request: Any) -> None:
        """The authenticated key and its organization, for the view (after authentication)."""
        api_key = request.auth
        if not isinstance(api_key, ApiKey):  # pragma: no cover - HasApiKey already refused
            raise exceptions.NotAuthenticated()
        self.api_key: ApiKey = api_key
        self.organization: Organization = api_key.organization

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        try:
            super().initial(request, *args, **kwargs)
        except BaseException:
            # Refused before the rate throttle ran (a permission): not counted.
            pending_count_give_back(request)
            raise
        self._bind_api_key(request)
        if request.method in ("GET", "HEAD"):
            self._check_query_params(request)
        elif self.takes_no_body:
            self._check_no_body(request)

    #: A write that reads no body (a cancel, a rotation): what it is sent must be empty or an
    #: empty JSON object. Without the check no parser ever looked at it, and a malformed or
    #: misdirected body (another route's fields) was acted on as if it were not there.
    takes_no_body = False

    def _check_no_body(self, request: Request) -> None:
        data = request.data  # parsed as any other body: malformed JSON is refused here
        if isinstance(data, Mapping) and not data:
            return
        if not isinstance(data, Mapping):
            raise exceptions.ValidationError(
                {"body": "This request takes no body: send none, or an empty JSON object."}
            )
        raise exceptions.ValidationError(
            {str(key): f"Unknown field '{key}'; this request takes no fields." for key in data}
        )

    def _check_query_params(self, request: Request) -> None:
        unknown = [name for name in request.query_params if name not in self.query_params]
        if not unknown:
            return
        takes = ", ".join(self.query_params) if self.query_params else "none"
        name = unknown[0]
        raise exceptions.ValidationError(
            {name: f"Unknown query parameter '{name}'; this endpoint takes: {takes}."}
        )

    def handle_exception(self, exc: Exception) -> Response:
        # Each dialect's handler maps ServiceErrors; infrastructure failures become one first.
        return super().handle_exception(infrastructure_error(exc) or exc)

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mjgate"'
