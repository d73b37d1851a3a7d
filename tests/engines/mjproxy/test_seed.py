"""Seeds of mjproxy tasks: Midjourney picks them, so the upstream is asked (once, on demand)
instead of reporting the seed mjgate drew at acceptance, which the upstream never used."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import UPSTREAM_SEED
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.fakes.mjproxy_server import seed_of

from .helpers import mjproxy_account, poll, start

pytestmark = pytest.mark.django_db

SEED_PATH = "/mj/task/{}/image-seed"


def api(key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=key.plaintext)
    return client


def running(organization, live_key, prompt: str) -> Task:
    caller = Caller(organization=organization, api_key=live_key.api_key)
    task = start(task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


def seed_requests(fake, task: Task) -> int:
    return len(fake.requests_to(SEED_PATH.format(task.upstream_job_id)))


def test_the_seed_is_asked_of_the_upstream_once_and_kept(funded, live_key, outsider_key, fake):
    mjproxy_account(fake)
    task = running(funded, live_key, "a lighthouse at night")
    # The seed drawn at acceptance is not the upstream's: while it runs, the seed is unknown.
    assert task.seed is None
    client = api(live_key)
    assert client.get(f"/mj/task/{task.pk}/image-seed").json()["result"] is None
    assert seed_requests(fake, task) == 0  # an unfinished job is not asked

    fake.finish(task.upstream_job_id)
    assert poll(task.pk).status == Status.SUCCESS
    expected = seed_of(task.upstream_job_id)
    # The outsider learns nothing and makes us ask nothing.
    foreign = api(outsider_key).get(f"/mj/task/{task.pk}/image-seed")
    assert foreign.status_code == 404
    assert seed_requests(fake, task) == 0

    answer = client.get(f"/mj/task/{task.pk}/image-seed").json()
    assert answer == {
        "code": 1,
        "description": "Success",
        "result": str(expected),
        "properties": {},
    }
    ttapi = client.post("/midjourney/v1/seed", {"jobId": task.pk}, format="json").json()
    assert ttapi["data"] == {"jobId": task.pk, "seed": str(expected)}
    assert seed_requests(fake, task) == 1
    stored = Task.objects.get(pk=task.pk)
    assert (stored.seed, stored.engine_state[UPSTREAM_SEED]) == (expected, expected)
    assert stored.status == Status.SUCCESS


def test_a_seed_the_prompt_fixes_is_known_without_asking(funded, live_key, fake):
    mjproxy_account(fake)
    task = running(funded, live_key, "a lighthouse at night --seed 4242")
    assert task.seed == 4242
    fake.finish(task.upstream_job_id)
    assert poll(task.pk).status == Status.SUCCESS
    answer = api(live_key).get(f"/mj/task/{task.pk}/image-seed").json()
    assert answer["result"] == "4242"
    assert seed_requests(fake, task) == 0


def test_an_upstream_that_cannot_answer_now_is_asked_again_later(funded, live_key, fake):
    mjproxy_account(fake)
    task = running(funded, live_key, "a lighthouse at night")
    fake.finish(task.upstream_job_id)
    assert poll(task.pk).status == Status.SUCCESS
    client = api(live_key)

    fake.http_status = 503
    failed = client.get(f"/mj/task/{task.pk}/image-seed")
    assert failed.json()["result"] is None
    assert failed.json()["code"] != 1
    stored = Task.objects.get(pk=task.pk)
    assert stored.seed is None and UPSTREAM_SEED not in stored.engine_state

    fake.http_status = None
    answer = client.get(f"/mj/task/{task.pk}/image-seed").json()
    assert answer["result"] == str(seed_of(task.upstream_job_id))
