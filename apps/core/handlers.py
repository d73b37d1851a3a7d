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
from django.core.handlers.exception import convert_exception_to_response, response_for_exception
from django.core.handlers.wsgi import WSGIHandler
from django.utils.deprecation import MiddlewareMixin
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
    "apps.core.middleware.ApiTextGuardMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)


def api_middleware() -> list[str]:
    """:data:`API_MIDDLEWARE` as configured: those of ``settings.MIDDLEWARE``, in its order."""
    return [path for path in settings.MIDDLEWARE if path in API_MIDDLEWARE]


#: Hooks a middleware may have that :class:`FusedMiddleware` does not run (the layered chain does).
_VIEW_HOOKS = ("process_view", "process_template_response", "process_exception")


class FusedMiddleware:
    """Several middlewares of the request/response kind as one layer, with the layered chain's
    outcome: their ``process_request`` in order (a response returned by one goes back through
    its own ``process_response`` and those before it), the view, then their ``process_response``
    in reverse order. An exception a hook raises becomes a response where the layered chain's
    ``convert_exception_to_response`` around that middleware would make it: the hooks of the
    middlewares outside it still run, its own response hook does not.

    The layered chain wraps each middleware in a function of Django's and, for the mixin's, its
    ``__call__`` with its checks; on the API chain (five of them) that cost the request more
    CPU than the hooks themselves. ``middlewares`` are instances whose ``process_request`` and
    ``process_response`` (either may be absent) are what their ``__call__`` does:
    Django's ``MiddlewareMixin`` classes, and ours that say so (``call_is_hooks``)."""

    def __init__(self, get_response: Callable[..., Any], middlewares: list[Any]) -> None:
        self.get_response = get_response
        self.middlewares = middlewares
        self._requests = [getattr(m, "process_request", None) for m in middlewares]
        self._responses = [getattr(m, "process_response", None) for m in middlewares]

    def __call__(self, request: Any) -> Any:
        response = None
        last = len(self._requests) - 1  # the innermost middleware whose response hook runs
        for index, hook in enumerate(self._requests):
            if hook is None:
                continue
            try:
                response = hook(request)
            except Exception as exc:
                response = response_for_exception(request, exc)
                last = index - 1
                break
            if response:  # MiddlewareMixin's test: ``response or self.get_response(request)``
                last = index
                break
        else:
            response = self.get_response(request)  # converts the view's exceptions itself
        responses = self._responses
        for index in range(last, -1, -1):
            hook = responses[index]
            if hook is None:
                continue
            try:
                response = hook(request, response)
            except Exception as exc:
                response = response_for_exception(request, exc)
        return response


def fusable(middleware: Any) -> bool:
    """Whether :class:`FusedMiddleware` runs ``middleware`` as its own ``__call__`` would: a
    synchronous middleware of ``process_request``/``process_response`` hooks only."""
    if any(hasattr(middleware, hook) for hook in _VIEW_HOOKS):
        return False
    if getattr(middleware, "async_mode", False):
        return False
    cls = type(middleware)
    return cls.__call__ is MiddlewareMixin.__call__ or getattr(cls, "call_is_hooks", False)


class ListedMiddleware:
    """For a Django handler class: the chain is ``self.middleware`` instead of
    ``settings.MIDDLEWARE`` (synchronous middleware only, as the API chain's are), run as one
    :class:`FusedMiddleware` layer when every one of them can be (``fused``)."""

    middleware: list[str]
    _get_response: Callable[..., Any]
    fused = True

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Callable[..., Any]] = []
        self._template_response_middleware: list[Callable[..., Any]] = []
        self._exception_middleware: list[Callable[..., Any]] = []
        handler = convert_exception_to_response(self._get_response)
        if self.fused:
            instances = [import_string(path)(handler) for path in self.middleware]
            if all(fusable(instance) for instance in instances):
                fused = FusedMiddleware(handler, instances)
                self._middleware_chain = convert_exception_to_response(fused)
                return
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
    def __init__(self, middleware: Iterable[str], *, fused: bool = True) -> None:
        self.middleware = list(middleware)
        self.fused = fused
        super().__init__()


def is_lean_path(path_info: str) -> bool:
    """Whether a request for ``path_info`` takes the API chain."""
    return path_info.startswith(LEAN_PATH_PREFIXES)


class PathRoutedWSGIHandler:
    """The WSGI application: the API chain for :data:`LEAN_PATH_PREFIXES`, the full one else."""

    def __init__(self, *, fused: bool = True) -> None:
        self.full = WSGIHandler()
        self.api = ListedMiddlewareWSGIHandler(api_middleware(), fused=fused)

    def handler_for(self, path_info: str) -> WSGIHandler:
        return self.api if is_lean_path(path_info) else self.full

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.handler_for(environ.get("PATH_INFO", ""))(environ, start_response)
