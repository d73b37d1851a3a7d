"""Unknown query-string parameters are refused, naming the parameter, in every dialect's
envelope (issue 14: no silently ignored input) — a misspelt filter must not list everything."""

from __future__ import annotations

import re
from typing import Any

import pytest

from apps.tasks.enums import Status
from tests.factories import TaskFactory

from .test_bola import api_routes

pytestmark = pytest.mark.django_db


def test_mjproxy_lists_refuse_an_unknown_parameter(funded, live_key, client_for):
    client = client_for(live_key)
    TaskFactory(organization=funded, status=Status.SUCCESS)
    for path in ("/mj/task/list", "/mj/task/queue"):
        answer = client.get(path, {"status": "SUCCESS"})
        assert answer.json() == {
            "code": 4,
            "description": "status: Unknown query parameter 'status'; this endpoint takes: none.",
            "result": None,
            "properties": {},
        }, path
        assert isinstance(client.get(path).json(), list)


def test_the_native_task_list_names_the_misspelt_filter(funded, live_key, client_for):
    client = client_for(live_key)
    TaskFactory(organization=funded, status=Status.SUCCESS)
    TaskFactory(organization=funded, status=Status.FAILURE)
    refused = client.get("/api/v1/tasks", {"stauts": "SUCCESS"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "validation_error"
    assert "stauts" in error["message"] or "stauts" in str(error["details"])
    assert "status, action, mode, is_test, search, cursor, limit" in str(error)
    listed = client.get("/api/v1/tasks", {"status": "SUCCESS", "limit": 5})
    assert [t["status"] for t in listed.json()["results"]] == ["SUCCESS"]


def test_ttapi_fetch_refuses_an_unknown_parameter(funded, live_key, client_for):
    client = client_for(live_key)
    task = TaskFactory(organization=funded, status=Status.SUCCESS)
    refused = client.get("/midjourney/v1/fetch", {"jobId": task.pk, "job_id": task.pk})
    assert refused.status_code == 400
    assert refused.json() == {
        "status": "FAILED",
        "message": "job_id: Unknown query parameter 'job_id'; this endpoint takes: jobId.",
        "data": None,
    }
    assert client.get("/midjourney/v1/fetch", {"jobId": task.pk}).status_code == 200


def _concrete(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?\w+>", "1", route).replace("^", "").replace("$", "")


def test_every_key_authenticated_get_route_refuses_an_unknown_parameter(
    organization, make_key, client_for
):
    """Walks the URL resolver: a new GET route is covered once it is mounted."""
    client = client_for(make_key(organization, can_read_billing=True))
    checked = 0
    for route, view in api_routes():
        if not hasattr(view, "get"):
            continue
        answer = client.get(_concrete(route), {"bogus_param": "1"})
        body: Any = answer.json() if answer.content else None
        assert body is not None, route
        assert "bogus_param" in str(body), (route, body)
        if answer.status_code == 200:  # mj-proxy answers its errors in the body
            assert body["code"] == 4, (route, body)
        else:
            assert answer.status_code == 400, (route, answer.status_code, body)
        checked += 1
    assert checked >= 15
