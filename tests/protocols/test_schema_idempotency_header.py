"""The OpenAPI schema declares ``Idempotency-Key`` exactly where a route honours it.

Every API view records a POST that carries the header (``apps.core.idempotency``,
``IdempotentPostMixin``) except the reads sent as POST, which set ``idempotent_methods = ()``
and ignore it. The schema declared the header on some routes only (tasks, keys, uploads), so a
client generated from it had no way to send it to, say, ``POST /webhooks/secret/rotate``, whose
answer is a secret shown once. Walked from the schemas and the URLconf, so a route added later
cannot be left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from apps.core.idempotency import IdempotentPostMixin

pytestmark = pytest.mark.django_db

HEADER = "Idempotency-Key"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCHEMAS = ("/api/schema/", "/api/schema/all/")


def _schema(url: str) -> dict[str, Any]:
    response = Client().get(url, HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content[:500]
    return response.json()


def _honours(view_class: Any, method: str) -> bool:
    """Whether the view records a request of ``method`` that carries the header."""
    return (
        isinstance(view_class, type)
        and issubclass(view_class, IdempotentPostMixin)
        and method.upper() in view_class.idempotent_methods
        and hasattr(view_class, method.lower())
    )


def _view_class(path: str) -> Any:
    """The view class behind a schema path, its parameters filled in."""
    match = resolve(re.sub(r"\{[^}]+\}", "1234", path))
    view_class = getattr(match.func, "view_class", None)
    assert view_class is not None, path
    return view_class


def _declares(operation: dict[str, Any]) -> bool:
    return any(
        parameter.get("in") == "header" and parameter.get("name") == HEADER
        for parameter in operation.get("parameters", [])
    )


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every route of the URLconf with its view class (None: a plain function view)."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), getattr(entry.callback, "view_class", None)


@pytest.mark.parametrize("url", SCHEMAS)
def test_every_operation_declares_the_header_exactly_when_its_view_honours_it(url: str) -> None:
    wrong = []
    for path, method, operation in _operations(_schema(url)):
        honours = _honours(_view_class(path), method)
        if honours != _declares(operation):
            wrong.append(f"{method.upper()} {path}: honours={honours}")
    assert not wrong, "\n".join(wrong)


def test_a_native_operation_with_the_header_documents_its_refusals() -> None:
    """A malformed key is 400, the key reused with another request 422, the key of a request
    still running 409. (The compatibility dialects answer them in their own envelopes, as
    docs/api.md says; their hand-written operations document one answer.)"""
    wrong = []
    for path, method, operation in _operations(_schema("/api/schema/")):
        if _declares(operation) and not {"400", "409", "422"} <= set(operation["responses"]):
            wrong.append(f"{method.upper()} {path}: {sorted(operation['responses'])}")
    assert not wrong, "\n".join(wrong)


def test_every_route_that_honours_the_header_is_documented_with_it() -> None:
    """Each view that records the header has an operation per such method in the docs schema
    (a route also mounted under another prefix — ``/mj-fast/mj/…``, ``/midjourney/video/…`` —
    shares its view, and so its operation), and that operation declares the header."""
    declared: set[tuple[Any, str]] = set()
    for path, method, operation in _operations(_schema("/api/schema/all/")):
        if _declares(operation):
            declared.add((_view_class(path), method.upper()))
    honouring = [
        (route, view_class, method)
        for route, view_class in _routes(get_resolver().url_patterns)
        for method in getattr(view_class, "idempotent_methods", ())
        if _honours(view_class, method)
    ]
    missing = [
        f"{method} {route} ({view_class.__module__}.{view_class.__qualname__})"
        for route, view_class, method in honouring
        if (view_class, method) not in declared
    ]
    assert not missing, "\n".join(missing)
    # The walk saw the native writes and both dialects' submits.
    routes = {route for route, _, _ in honouring}
    assert {
        "api/v1/tasks",
        "api/v1/upstream-accounts",
        "api/v1/webhooks/endpoints",
        "api/v1/webhooks/endpoints/<str:endpoint_id>/test",
        "api/v1/webhooks/secret/rotate",
        "api/v1/webhooks/deliveries/<str:delivery_id>/resend",
        "mj/submit/imagine",
        "midjourney/v1/imagine",
    } <= routes


def test_reads_sent_as_post_do_not_declare_it() -> None:
    paths = _schema("/api/schema/all/")["paths"]
    for path in ("/mj/task/list-by-condition", "/midjourney/v1/fetch", "/midjourney/v1/seed"):
        assert not _declares(paths[path]["post"]), path
    assert _declares(paths["/mj/submit/imagine"]["post"])
    assert _declares(paths["/midjourney/v1/imagine"]["post"])

    def header(operation: dict[str, Any]) -> dict[str, Any]:
        (found,) = [p for p in operation["parameters"] if p["name"] == HEADER]
        return found

    native = header(paths["/api/v1/webhooks/secret/rotate"]["post"])
    assert native["in"] == "header"
    assert native.get("required", False) is False
    assert native["schema"] == {"type": "string"}
    # The dialects' hand-written operations carry the very same parameter.
    assert header(paths["/mj/task/{id}/cancel"]["post"]) == native
    assert header(paths["/midjourney/v1/video/extend"]["post"]) == native
