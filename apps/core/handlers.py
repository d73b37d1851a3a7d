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

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
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


class ListedMiddleware:
    """For a Django handler class: the chain is ``self.middleware`` instead of
    ``settings.MIDDLEWARE`` (synchronous middleware only, as the API chain's are)."""

    middleware: list[str]
    _get_response: Callable[..., Any]

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Callable[..., Any]] = []
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(self.middleware):
            instance = import_string(path)(handler)
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            handler = convert_exception_to_response(instance)
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
