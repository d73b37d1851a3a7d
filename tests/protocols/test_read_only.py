"""Read-only keys (SPEC §2) may fetch and list but change nothing, on every route of every dialect.

The routes are found by walking the URL resolver, as the BOLA matrix does: every method other
than GET is a change unless it is one of the few POSTs that only read, listed below. A new
mutating view that forgets ``writes = True`` fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_bola import _PREFIXED, _call, _methods, _params, api_routes, database_state, objects_of

pytestmark = pytest.mark.django_db

#: POSTs that only read: the proxy's list by ids, TTAPI's fetch and seed.
READING_POSTS = {
    "mj/task/list-by-condition",
    "midjourney/v1/fetch",
    "midjourney/v1/seed",
}
MESSAGE = "This API key is read-only and cannot submit or change anything."


def _changes() -> list[tuple[str, str]]:
    return [
        (route, method)
        for route, view in api_routes()
        for method in _methods(view)
        if method != "get" and _PREFIXED.sub("", route) not in READING_POSTS
    ]


def test_every_changing_view_declares_writes():
    changes = set(_changes())
    missing = sorted(
        f"{method.upper()} {route} ({view.__name__})"
        for route, view in api_routes()
        for method in _methods(view)
        if (route, method) in changes and not view.writes
    )
    assert missing == []
    assert len(changes) >= 4 * 10 + 15  # the walk finds the routes of all dialects


def _refusal(route: str, body: dict[str, Any]) -> None:
    if route.startswith(("mj/", "mj-")):
        assert body == {"code": 4, "description": MESSAGE, "result": None, "properties": {}}
    elif route.startswith("midjourney/"):
        assert body == {"status": "FAILED", "message": MESSAGE, "data": None}
    else:
        assert body == {"error": {"code": "permission_denied", "message": MESSAGE, "details": None}}


@pytest.mark.parametrize(("route", "method"), _changes())
def test_read_only_key_changes_nothing(route, method, funded, make_key, client_for):
    read_only = make_key(funded, read_only=True)
    client = client_for(read_only)
    client.get("/api/v1/balance")  # first use stamps last_used_at; keep it out of the diff
    own = objects_of(funded, read_only.api_key)
    path = "/" + route
    for param in _params(route):
        path = path.replace(f"<str:{param}>", str(own[param][0]))
    body = {
        "prompt": "a fox",
        "taskId": own["task"],
        "jobId": own["task"],
        "customId": own["custom_id"],
        "action": "upsample1",
        "name": "x",
        "url": "https://hooks.example/x",
    }
    before = database_state()
    response = _call(client, method, path, body)
    assert response.status_code == 403, (route, method, response.content)
    _refusal(route, response.json())
    assert database_state() == before


@pytest.mark.parametrize("route", sorted(READING_POSTS))
def test_read_only_key_may_use_the_reading_posts(route, funded, make_key, client_for):
    read_only = make_key(funded, read_only=True)
    own = objects_of(funded, read_only.api_key)
    response = client_for(read_only).post(
        "/" + route, {"ids": [own["task"]], "jobId": own["task"]}, format="json"
    )
    assert response.status_code == 200, response.content
