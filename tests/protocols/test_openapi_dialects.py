"""/api/docs/ documents the two compatibility dialects, route for route."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import resolve

from apps.protocols.mjproxy.urls import _ROUTES as MJPROXY_ROUTES
from apps.protocols.openapi_dialects import MJPROXY, TTAPI
from apps.protocols.ttapi.urls import urlpatterns as ttapi_patterns


def _documented(table: list[tuple]) -> set[tuple[str, str]]:
    return {(method, path) for method, path, *_ in table}


def test_every_documented_path_is_a_route_of_its_dialect() -> None:
    for table, namespace in ((MJPROXY, "mjproxy"), (TTAPI, "ttapi")):
        for _, path, *_ in table:
            match = resolve(path.replace("{id}", "1234"))
            assert match.namespace == namespace, path


def test_every_route_of_both_dialects_is_documented() -> None:
    documented = {path for _, path in _documented(MJPROXY) | _documented(TTAPI)}
    for route, _, _ in MJPROXY_ROUTES:
        assert "/mj/" + route.replace("<str:task_id>", "{id}") in documented, route
    for pattern in ttapi_patterns:
        assert f"/midjourney/v1/{pattern.pattern}" in documented, pattern.pattern


@pytest.mark.django_db
def test_the_docs_schema_has_all_three_dialects_and_links_back_to_the_dashboard() -> None:
    response = Client().get("/api/schema/all/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    tags = {tag for item in schema["paths"].values() for op in item.values() for tag in op["tags"]}
    assert {"v1", "midjourney-proxy", "TTAPI"} <= tags
    imagine = schema["paths"]["/mj/submit/imagine"]["post"]
    assert imagine["requestBody"]["content"]["application/json"]["schema"]["required"] == ["prompt"]
    assert {"mjApiSecret": []} in imagine["security"]
    assert "get" in schema["paths"]["/midjourney/v1/fetch"]
    assert "[Back to the dashboard](/)" in schema["info"]["description"]


@pytest.mark.django_db
def test_the_docs_page_shows_the_full_schema_and_the_native_one_stays_native() -> None:
    html = Client().get("/api/docs/").content.decode()
    assert "/api/schema/all/" in html
    native = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert not any(p.startswith(("/mj", "/midjourney")) for p in native["paths"])


def test_each_dialect_route_is_described_once():
    # A second entry for a route silently replaced the first in the schema.
    for table in (MJPROXY, TTAPI):
        routes = [(method, path) for method, path, *_ in table]
        assert len(routes) == len(set(routes)), sorted(r for r in routes if routes.count(r) > 1)
