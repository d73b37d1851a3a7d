"""The OpenAPI schema, the interactive docs, and schemathesis against the native API: no server
error, and every answer conforms to the schema (status, content type, body)."""

from __future__ import annotations

import re
import socket
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.api_keys.models import ApiKey

pytestmark = pytest.mark.django_db

#: Generated requests per operation and mode; the total is asserted below.
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


def test_schema_is_openapi_3_and_describes_the_native_api():
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/cancel",
        "/api/v1/tasks/{task_id}/modal",
        "/api/v1/keys",
        "/api/v1/keys/{key_id}",
        "/api/v1/balance",
    ):
        assert path in paths
    assert not any(p.startswith(("/mj", "/midjourney")) for p in paths)
    create = paths["/api/v1/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreate"
    }
    assert set(create["responses"]) >= {"201", "400", "402", "404", "409", "422", "429"}
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    task = schema["components"]["schemas"]["Task"]
    assert {"image_url", "image_urls", "buttons", "is_test", "progress"} <= set(task["properties"])


def test_docs_are_served_without_any_external_host():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls, "the page loads its assets"
    for url in urls + re.findall(r"https?://[^\s\"'<>]+", html):
        assert not re.match(r"^(https?:)?//", url) or url.startswith("http://testserver/"), url
    for asset in urls:
        if asset.startswith("/static/"):
            # Shipped by drf-spectacular-sidecar and found by collectstatic / whitenoise.
            assert finders.find(asset.removeprefix("/static/").split("?")[0]), asset


@pytest.fixture
def no_dns(monkeypatch):
    """Generated URLs must never leave the machine."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror("DNS is disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def keep_test_connection():
    """The raw WSGI app closes the connection after each request (as the test Client does not),
    which would end the test's transaction; keep it open as the Client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(
    settings, funded, live_key, sandbox, no_dns, keep_test_connection
):
    from config.wsgi import application

    settings.API_RATE_LIMIT = 0
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    # Every header the schema declares for the key, or schemathesis fills the others with
    # generated junk and most requests stop at 401.
    headers = {
        "mj-api-secret": live_key.plaintext,
        "Authorization": f"Bearer {live_key.plaintext}",
        "TT-API-KEY": live_key.plaintext,
    }
    sent: list[int] = []
    errors: list[str] = []
    nonconforming: dict[str, str] = {}

    def restore_key() -> None:
        # A generated DELETE or PATCH may hit our own key's id; keep it usable.
        ApiKey.objects.filter(pk=live_key.api_key.pk).update(
            revoked_at=None,
            read_only=False,
            can_midjourney=True,
            can_read_billing=True,
            allowed_ips=[],
            expires_at=None,
        )

    for operation in operations:
        for mode, examples in EXAMPLES.items():

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                restore_key()
                response = case.call(headers=headers)
                sent.append(response.status_code)
                if response.status_code >= 500:
                    errors.append(f"{case.method} {case.formatted_path}: {response.status_code}")
                try:
                    # The answer is one the schema documents: status, content type and body.
                    case.validate_response(response, checks=CONFORMANCE)
                except BaseException as exc:  # schemathesis raises an exception group
                    where = f"{case.method} {case.path} {response.status_code}"
                    nonconforming.setdefault(where, str(exc)[:500])

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid: an operation with no parameter, body or key
                # (GET /api/v1/status) has no negative case. Its positive case ran.
                if mode != GenerationMode.NEGATIVE:
                    raise
    assert errors == []
    assert nonconforming == {}
    assert len(sent) >= 1000
    assert sum(1 for status in sent if status < 300) >= 100, "most requests were refused"
