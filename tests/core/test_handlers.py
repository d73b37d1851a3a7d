"""The WSGI application routes API paths through the short middleware chain (apps/core/handlers.py).

The test clients route the same way (tests/conftest.py), so every API test exercises the API
chain; these tests call the production application itself, as gunicorn does.
"""

from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpResponse
from django.test import Client
from django.utils.deprecation import MiddlewareMixin

from apps.core.handlers import API_MIDDLEWARE, api_middleware, is_lean_path


def wsgi_call(
    path: str,
    method: str = "GET",
    query: str = "",
    **headers: str,  # environ keys: HTTP_…
) -> tuple[int, dict[str, str], bytes]:
    from config.wsgi import application

    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc=None) -> None:
        answer["status"] = int(status.split()[0])
        answer["headers"] = {name.lower(): value for name, value in response_headers}

    result = application(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return answer["status"], answer["headers"], body


@pytest.mark.parametrize(
    ("path", "lean"),
    [
        ("/mj/submit/imagine", True),
        ("/mj-relax/mj/task/1/fetch", True),
        ("/midjourney/v1/imagine", True),
        ("/api/v1/tasks", True),
        ("/api/docs/", False),
        ("/api/schema/", False),
        ("/mjadmin/", False),
        ("/mj", False),
        ("/accounts/login/", False),
        ("/", False),
    ],
)
def test_api_paths_take_the_api_chain(path, lean):
    assert is_lean_path(path) is lean


def test_the_api_chain_is_a_subset_of_the_full_one_in_its_order():
    chain = api_middleware()
    assert chain == [entry for entry in settings.MIDDLEWARE if entry in API_MIDDLEWARE]
    assert set(API_MIDDLEWARE) <= set(settings.MIDDLEWARE)
    assert not any("session" in entry.lower() or "csrf" in entry.lower() for entry in chain)


@pytest.mark.django_db
def test_an_api_request_gets_no_session_and_the_dashboard_still_does():
    api = Client().get("/api/v1/balance")
    assert api.status_code == 401
    assert not hasattr(api.wsgi_request, "session")
    page = Client().get("/accounts/login/")
    assert hasattr(page.wsgi_request, "session")
    assert hasattr(page.wsgi_request, "user")


@pytest.mark.django_db
def test_the_api_chain_keeps_cors_security_headers_and_the_error_envelope():
    status, headers, body = wsgi_call("/api/v1/balance", HTTP_ORIGIN="https://chat.example")
    assert status == 401
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["content-type"].startswith("application/json")
    assert "set-cookie" not in headers
    assert json.loads(body)["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_api_chain_answers_preflights():
    status, headers, _ = wsgi_call(
        "/mj/submit/imagine",
        "OPTIONS",
        HTTP_ORIGIN="https://chat.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"


@pytest.mark.django_db
def test_the_api_chain_refuses_nul_in_the_url_in_the_dialect_shape():
    status, headers, body = wsgi_call("/mj/task/\x00/fetch")
    assert status == 200  # mj-proxy's shape: a code in a 200 answer
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == 4
    status, _, body = wsgi_call("/api/v1/tasks", query="limit=%00")
    assert status == 400
    assert "error" in json.loads(body)


@pytest.mark.django_db
def test_an_unknown_api_path_is_json_and_other_pages_keep_the_full_chain():
    status, headers, _ = wsgi_call("/api/v1/no-such-thing")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert headers["access-control-allow-origin"] == "*"
    status, headers, _ = wsgi_call("/accounts/login/")
    assert status == 200
    assert "csrftoken" in headers.get("set-cookie", "")


# --- the API chain as one layer (FusedMiddleware) answers exactly as the layered chain ---------


def _both_chains_answer(path: str, method: str = "GET", query: str = "", **headers: str) -> Any:
    """The production application's answer with the API chain fused and layered."""
    from apps.core.handlers import PathRoutedWSGIHandler

    answers = []
    for fused in (True, False):
        application = PathRoutedWSGIHandler(fused=fused)
        assert (
            application.api._middleware_chain.__wrapped__.__class__.__name__ == "FusedMiddleware"
        ) is fused
        answers.append(_call(application, path, method, query, **headers))
    assert answers[0] == answers[1]
    return answers[0]


def _call(application: Any, path: str, method: str, query: str, **headers: str) -> Any:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc=None) -> None:
        answer["status"] = status
        answer["headers"] = list(response_headers)

    result = application(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return answer["status"], answer["headers"], body


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "method", "query", "headers", "status", "framed"),
    [
        # A preflight: answered by the CORS hook, its own response hook adds the headers.
        (
            "/mj/submit/imagine",
            "OPTIONS",
            "",
            {"HTTP_ORIGIN": "https://a.example", "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"},
            "204 No Content",
            False,
        ),
        # The text guard raises in its request hook: converted there, outer hooks still run.
        ("/mj/task/\x00/fetch", "GET", "", {}, "200 OK", False),
        ("/api/v1/tasks", "GET", "limit=%00", {}, "400 Bad Request", False),
        (
            "/api/v1/balance",
            "GET",
            "",
            {"HTTP_ORIGIN": "https://a.example"},
            "401 Unauthorized",
            True,
        ),
        ("/api/v1/no-such-thing", "GET", "", {}, "404 Not Found", True),
        (
            "/mj/submit/imagine",
            "POST",
            "",
            {"HTTP_MJ_API_SECRET": "not-a-key"},
            "401 Unauthorized",
            True,
        ),
    ],
)
def test_the_fused_api_chain_answers_as_the_layered_one(
    path, method, query, headers, status, framed
):
    answer = _both_chains_answer(path, method, query, **headers)
    assert answer[0] == status
    names = {name.lower() for name, _ in answer[1]}
    assert {"access-control-allow-origin", "x-content-type-options"} <= names
    # X-Frame-Options' middleware is the innermost: not on what an outer one answered.
    assert ("x-frame-options" in names) is framed


@pytest.mark.django_db
def test_the_fused_api_chain_matches_a_security_redirect(settings):
    # SecurityMiddleware answers in its request hook: its own response hook runs, the inner
    # middlewares' (CORS, X-Frame-Options) do not.
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    status, headers, _ = _both_chains_answer("/api/v1/balance")
    assert status == "301 Moved Permanently"
    names = {name.lower() for name, _ in headers}
    assert "access-control-allow-origin" not in names
    assert "x-frame-options" not in names
    assert "x-content-type-options" in names


@pytest.mark.django_db
def test_the_fused_api_chain_matches_a_refused_user_agent(settings):
    # CommonMiddleware raises PermissionDenied in its request hook: the answer is made there;
    # the outer hooks (security, CORS) run, the inner one (X-Frame-Options) does not.
    settings.DISALLOWED_USER_AGENTS = [re.compile("badbot")]
    status, headers, _ = _both_chains_answer("/api/v1/balance", HTTP_USER_AGENT="badbot/1")
    assert status == "403 Forbidden"
    names = {name.lower() for name, _ in headers}
    assert "access-control-allow-origin" in names
    assert "x-content-type-options" in names
    assert "x-frame-options" not in names


class _Recorder(MiddlewareMixin):
    """A middleware whose hooks record their calls and may answer or raise."""

    log: list[str] = []
    answer_in: set[str] = set()
    raise_in: set[str] = set()

    def process_request(self, request):
        self.log.append(f"{self.name}.request")
        if f"{self.name}.request" in self.raise_in:
            raise PermissionDenied(self.name)
        if f"{self.name}.request" in self.answer_in:
            return HttpResponse(f"from {self.name}")
        return None

    def process_response(self, request, response):
        self.log.append(f"{self.name}.response:{response.status_code}")
        if f"{self.name}.response" in self.raise_in:
            raise SuspiciousOperation(self.name)
        response[f"X-{self.name}"] = "seen"
        return response


def _recorders() -> list[type[_Recorder]]:
    return [type(name, (_Recorder,), {"name": name}) for name in ("A", "B", "C")]


def _view(request):
    _Recorder.log.append("view")
    if "view" in _Recorder.raise_in:
        raise Http404("no")
    return HttpResponse("view")


_HOOKS = ["A.request", "B.request", "C.request", "A.response", "B.response", "C.response", "view"]


@pytest.mark.parametrize(
    ("answer_in", "raise_in"),
    [
        (set(), set()),
        *[(set(), {hook}) for hook in _HOOKS],
        *[({hook}, set()) for hook in _HOOKS[:3]],
        ({"B.request"}, {"A.response"}),
        ({"C.request"}, {"B.response", "view"}),
        (set(), {"B.request", "A.response"}),
    ],
)
def test_fused_middleware_runs_hooks_as_the_layered_chain(rf, answer_in, raise_in):
    from django.core.handlers.exception import convert_exception_to_response

    from apps.core.handlers import FusedMiddleware, fusable

    outcomes = []
    for fused in (True, False):
        _Recorder.log, _Recorder.answer_in, _Recorder.raise_in = [], answer_in, raise_in
        inner = convert_exception_to_response(_view)
        classes = _recorders()
        if fused:
            instances = [cls(inner) for cls in classes]
            assert all(fusable(instance) for instance in instances)
            chain = convert_exception_to_response(FusedMiddleware(inner, instances))
        else:
            chain = inner
            for cls in reversed(classes):
                chain = convert_exception_to_response(cls(chain))
        response = chain(rf.get("/x"))
        outcomes.append(
            (response.status_code, response.content, sorted(response.items()), _Recorder.log)
        )
    assert outcomes[0] == outcomes[1]


def test_a_middleware_with_view_hooks_is_not_fused():
    from apps.core.handlers import fusable

    class WithView(MiddlewareMixin):
        def process_view(self, request, view, args, kwargs):
            return None

    class OwnCall:
        def __init__(self, get_response):
            self.get_response = get_response

        def __call__(self, request):
            return self.get_response(request)

    assert not fusable(WithView(lambda request: None))
    assert not fusable(OwnCall(lambda request: None))
    assert fusable(_recorders()[0](lambda request: None))
