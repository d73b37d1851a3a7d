"""The WSGI application routes API paths through the short middleware chain (apps/core/handlers.py).

The test clients route the same way (tests/conftest.py), so every API test exercises the API
chain; these tests call the production application itself, as gunicorn does.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

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
@pytest.mark.parametrize(
    "path",
    [
        "/tasks/a%00b/",
        "/tasks/a%00b/card/",
        "/tasks/a%00b/download/image/",
        "/tasks/a%00b/editor/",
        "/admin/tasks/task/a%00b/change/",
        "/tasks/?q=%00",
    ],
)
def test_pages_refuse_nul_in_the_url_too(path, member, admin_user):
    """Beyond the API: a dashboard or admin page with a NUL in its URL is a 400, never the
    server error of a query PostgreSQL cannot run."""
    from tests.dashboard.helpers import login

    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    for user in (member, admin_user):
        response = login(user, raise_request_exception=False).get(path)
        assert response.status_code == 400, (path, user.email, response.status_code)


@pytest.mark.django_db
def test_an_unknown_api_path_is_json_and_other_pages_keep_the_full_chain():
    status, headers, _ = wsgi_call("/api/v1/no-such-thing")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert headers["access-control-allow-origin"] == "*"
    status, headers, _ = wsgi_call("/accounts/login/")
    assert status == 200
    assert "csrftoken" in headers.get("set-cookie", "")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "query", "status", "shape"),
    [
        ("/api/v1/nope", "", 404, "error"),
        ("/api/v1/tasks/123/nope", "", 404, "error"),
        ("/midjourney/v1/nope", "", 404, "status"),
        ("/mj/nope", "", 404, "code"),
        ("/mj-fast/mj/nope", "", 404, "code"),
        ("/mj/task/12\x003/fetch", "", 200, "code"),  # mj-proxy: a code in a 200 answer
        ("/api/v1/tasks", "limit=%00", 400, "error"),
    ],
)
def test_with_debug_on_api_errors_are_still_the_dialects_json(path, query, status, shape, settings):
    """``scripts/run.sh`` runs with DEBUG on: an API client must still get JSON, not Django's
    debug pages (HTML, listing every route)."""
    settings.DEBUG = True
    got, headers, body = wsgi_call(path, query=query)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    assert shape in json.loads(body)


@pytest.mark.django_db
def test_with_debug_on_a_server_error_on_an_api_path_is_json_and_logged(
    settings, monkeypatch, caplog
):
    from apps.core.middleware import UrlTextGuardMiddleware

    def boom(self, request):
        raise RuntimeError("boom")

    settings.DEBUG = True
    monkeypatch.setattr(UrlTextGuardMiddleware, "__call__", boom)
    status, headers, body = wsgi_call("/api/v1/tasks")
    assert status == 500
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    # Pages keep Django's debug page with DEBUG on.
    status, headers, _ = wsgi_call("/tasks/")
    assert status == 500
    assert headers["content-type"].startswith("text/html")


@pytest.mark.django_db
def test_with_debug_on_the_api_chain_keeps_djangos_security_record(client, settings, caplog):
    """A SuspiciousOperation on an API path (a Host header not allowed) is answered in the
    dialect's JSON and still written to ``django.security.<its name>``, as Django does."""
    import logging

    settings.DEBUG = True
    caplog.set_level(logging.ERROR)
    response = client.get("/api/v1/balance", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert any(r.name == "django.security.DisallowedHost" for r in caplog.records)
