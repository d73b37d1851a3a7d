"""A press that names no parent task is a bad request naming the field, in each dialect's
words: not "the parent task does not exist" (a 404, or mj-proxy's code 3), which sends a
client looking for a task it never named."""

from __future__ import annotations

import pytest

from .conftest import snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("parent", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_a_press_without_its_parent_names_the_field(funded, live_key, client_for, parent):
    client = client_for(live_key)
    before = snapshot(funded)
    extra = {} if parent is None else {"taskId": parent}
    mjproxy = client.post(
        "/mj/submit/action", {"customId": "MJ::JOB::upsample::1::x", **extra}, format="json"
    ).json()
    extra = {} if parent is None else {"jobId": parent}
    ttapi = client.post("/midjourney/v1/action", {"action": "upsample1", **extra}, format="json")
    extra = {} if parent is None else {"parent": parent}
    native = client.post("/api/v1/tasks", {"button": "U1", **extra}, format="json")
    assert mjproxy["code"] == 4
    assert "taskId is required" in mjproxy["description"]
    assert ttapi.status_code == 400
    assert "jobId is required" in ttapi.json()["message"]
    assert native.status_code == 400, native.json()
    assert native.json()["error"]["code"] == "validation_error"
    assert snapshot(funded) == before
