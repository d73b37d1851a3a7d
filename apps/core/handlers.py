"""The WSGI entry point: API routes take a short middleware chain, everything else the full one.

A key-authenticated API request (``/mj/…``, ``/api/v1/…``, the TTAPI routes) uses no session,
CSRF token, logged-in user, flash message or allauth state, yet the full ``settings.MIDDLEWARE``
chain builds or checks each of them on every request. :class:`PathRoutedWSGIHandler` keeps two
Django handlers over the same URLconf: requests whose path starts with one of
:data:`LEAN_PATH_PREFIXES` go through :data:`API_MIDDLEWARE` (what an API response needs: the
security headers, CORS, the URL text guard, Django's common handling, X-Frame-Options), the rest
(dashboard, admin, allauth, billing, the API docs) through ``settings.MIDDLEWARE`` unchanged.

Body limits, authentication, rate limits and error envelopes live in the API views and the
URLconf's handlers, so both chains apply them alike.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.handlers.exception import get_exception_response, response_for_exception
from django.core.handlers.wsgi import WSGIHandler
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import get_resolver, get_urlconf
from django.utils.log import log_response
from django.utils.module_loading import import_string

#: Paths served through :data:`API_MIDDLEWARE`: the API routes (the same prefixes as CORS's,
#: without ``/api/`` itself, whose schema and docs pages are served like any other page).
LEAN_PATH_PREFIXES = (
    "/mj/",
    "/mj-fast/",
    "/mj-relax/",
    "/mj-turbo/",
    "/midjourney/",
    "/api/v1/",
)

#: The API routes' middleware: those of ``settings.MIDDLEWARE`` named here, in its order (the API
#: chain is a subset of the full one, never an addition).
API_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "apps.core.middleware.CompatCorsMiddleware",
    "apps.core.middleware.UrlTextGuardMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)


def api_middleware() -> list[str]:
    """:data:`API_MIDDLEWARE` as configured: those of ``settings.MIDDLEWARE``, in its order."""
    return [path for path in settings.MIDDLEWARE if path in API_MIDDLEWARE]


def api_response_for_exception(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Django's ``response_for_exception``, except that with ``DEBUG`` on an API client still
    gets the URLconf's error handlers (its dialect's JSON: ``apps.protocols.common``) rather
    than Django's HTML debug pages, which a client cannot parse and which list every route.
    The traceback of a server error goes to the log, as in production."""
    if not settings.DEBUG or isinstance(exc, (PermissionDenied, MultiPartParserError)):
        # Without DEBUG, and for these two with it, Django answers through the handlers.
        return response_for_exception(request, exc)
    resolver = get_resolver(get_urlconf())
    if isinstance(exc, Http404):
        return get_exception_response(request, resolver, 404, exc)
    if isinstance(exc, BadRequest):
        response = get_exception_response(request, resolver, 400, exc)
        log_response(
            "%s: %s", str(exc), request.path, response=response, request=request, exception=exc
        )
        return response
    if isinstance(exc, SuspiciousOperation):
        if isinstance(exc, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
            request._mark_post_parse_error()  # type: ignore[attr-defined]  # as Django does
        response = get_exception_response(request, resolver, 400, exc)
        # Django's own record of it, to the security logger named after the exception.
        log_response(
            str(exc),
            exception=exc,
            request=request,
            response=response,
            level="error",
            logger=logging.getLogger(f"django.security.{exc.__class__.__name__}"),
        )
        return response
    signals.got_request_exception.send(sender=None, request=request)
    if settings.DEBUG_PROPAGATE_EXCEPTIONS:
        raise exc
    response = resolver.resolve_error_handler(500)(request)
    log_response(
        "%s: %s",
        response.reason_phrase,
        request.path,
        response=response,
        request=request,
        exception=exc,
    )
    return response


def api_exception_to_response(get_response: Callable[..., Any]) -> Callable[..., Any]:
    """``convert_exception_to_response`` with :func:`api_response_for_exception`."""

    @functools.wraps(get_response)
    def inner(request: HttpRequest) -> HttpResponse:
        try:
            response: HttpResponse = get_response(request)
        except Exception as exc:
            response = api_response_for_exception(request, exc)
        return response

    return inner


class ListedMiddleware:
    """For a Django handler class: the chain is ``self.middleware`` instead of
    ``settings.MIDDLEWARE`` (synchronous middleware only, as the API chain's are)."""

    middleware: list[str]
    _get_response: Callable[..., Any]

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Callable[..., Any]] = []
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []
        handler = api_exception_to_response(self._get_response)
        for path in reversed(self.middleware):
            instance = import_string(path)(handler)
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            handler = api_exception_to_response(instance)
        self._middleware_chain = handler


class ListedMiddlewareWSGIHandler(ListedMiddleware, WSGIHandler):
    def __init__(self, middleware: Iterable[str]) -> None:
        self.middleware = list(middleware)
        super().__init__()


def is_lean_path(path_info: str) -> bool:
    """Whether a request for ``path_info`` takes the API chain."""
    return path_info.startswith(LEAN_PATH_PREFIXES)


class PathRoutedWSGIHandler:
    """The WSGI application: the API chain for :data:`LEAN_PATH_PREFIXES`, the full one else."""

    def __init__(self) -> None:
        self.full = WSGIHandler()
        self.api = ListedMiddlewareWSGIHandler(api_middleware())

    def handler_for(self, path_info: str) -> WSGIHandler:
        return self.api if is_lean_path(path_info) else self.full

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.handler_for(environ.get("PATH_INFO", ""))(environ, start_response)
