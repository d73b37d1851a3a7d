"""Idempotency-Key on a POST that only reads (TTAPI fetch and seed, mj-proxy
list-by-condition): nothing is recorded, so a later call reads the task as it is now.

Replaying the first answer for 24 hours would freeze a task's status at, say, "queued" for a
client that polls with a fixed key (docs/api.md, "Idempotency-Key").
"""

from __future__ import annotations

import pytest

from apps.core.models import IdempotencyRecord
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(funded, live_key, sandbox):
    caller = Caller(organization=funded, api_key=live_key.api_key, protocol="mjproxy")
    return task_submit(caller=caller, action="IMAGINE", prompt="a red fox").task


def _post_twice(client, path, body, read, task):
    """The same POST with the same key before and after ``task`` finishes: ``read`` of each."""
    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="poll")
    assert first.status_code == 200, first.content
    run_to_completion(task.pk)
    second = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="poll")
    assert second.status_code == 200, second.content
    assert "Idempotent-Replayed" not in second
    assert not IdempotencyRecord.objects.filter(key="poll").exists()
    return read(first.json()), read(second.json())


def test_ttapi_fetch_by_post_reads_the_task_as_it_is_now(queued, live_key, client_for):
    before, after = _post_twice(
        client_for(live_key),
        "/midjourney/v1/fetch",
        {"jobId": queued.pk},
        lambda body: body["data"]["status"],
        queued,
    )
    assert (before, after) != ("SUCCESS", "SUCCESS")
    assert after == "SUCCESS"


def test_ttapi_seed_by_post_reads_the_task_as_it_is_now(queued, live_key, client_for):
    before, after = _post_twice(
        client_for(live_key),
        "/midjourney/v1/seed",
        {"jobId": queued.pk},
        lambda body: body["data"],
        queued,
    )
    assert before == {"jobId": queued.pk, "seed": None}
    assert after["seed"] is not None


def test_mjproxy_list_by_condition_reads_the_tasks_as_they_are_now(queued, live_key, client_for):
    before, after = _post_twice(
        client_for(live_key),
        "/mj/task/list-by-condition",
        {"ids": [queued.pk]},
        lambda body: [task["status"] for task in body],
        queued,
    )
    assert before != ["SUCCESS"]
    assert after == ["SUCCESS"]
