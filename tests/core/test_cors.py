from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.parametrize(
    "path", ["/mj/submit/imagine", "/mj-relax/mj/task/1/fetch", "/api/v1/balance"]
)
def test_preflight_is_answered(path):
    response = Client().options(
        path,
        HTTP_ORIGIN="https://chat.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, mj-api-secret",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "mj-api-secret", "authorization"} <= allowed


@pytest.mark.django_db
def test_api_responses_carry_cors_headers():
    response = Client().get("/api/v1/balance", HTTP_ORIGIN="https://chat.example")
    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == "*"


def test_non_api_paths_have_no_cors():
    response = Client().get("/healthz")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.parametrize(
    "path", ["/mj-turbo/mj/submit/imagine", "/mj-fast/mj/task/list", "/midjourney/v1/imagine"]
)
def test_every_api_prefix_answers_preflights_without_credentials(path):
    response = Client().options(
        path, HTTP_ORIGIN="https://chat.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/mjadmin/login/", "/mjx", "/accounts/login/", "/", "/admin/login/", "/files/x"]
)
def test_no_cors_outside_the_api_prefixes(path):
    preflight = Client().options(
        path, HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in preflight
    get = Client().get(path, HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in get
