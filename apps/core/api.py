"""Base API view and the native error format (SPEC §6.3)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey

from .errors import ServiceError
from .idempotency import IdempotentPostMixin
from .ratelimit import RequestSizeLimitMixin


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _drf_code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return "validation_error" if isinstance(exc, exceptions.ValidationError) else "error"


def native_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as ``{"error": {"code", "message", "details"}}`` with the right status."""
    if isinstance(exc, ServiceError):
        response = Response(error_body(exc.code, exc.message, exc.details or None), exc.http_status)
        if exc.http_status == 429 and "retry_after" in exc.details:
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
    return None


class JSONBodyParser(JSONParser):
    """DRF's JSON parser, but a body nested deeper than Python's parser goes (``[[[[…``, a few
    hundred kilobytes) is bad JSON like any other (400), not a RecursionError and a 500."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError(
                "JSON parse error - the body is nested too deeply."
            ) from exc


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

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        api_key = request.auth
        if not isinstance(api_key, ApiKey):  # pragma: no cover - HasApiKey already refused
            raise exceptions.NotAuthenticated()
        self.api_key: ApiKey = api_key
        self.organization: Organization = api_key.organization

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mjgate"'
