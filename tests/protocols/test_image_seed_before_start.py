"""A task's seed before its job has started is only the one its prompt fixes: the seed drawn
at acceptance is replaced when an upstream that picks its own (mjproxy, Discord) starts the
job, so answering it would hand out a seed the image was never made with. Every dialect's seed
(mj-proxy ``image-seed``, TTAPI ``seed`` and fetch's ``seed``, the native ``seed``) says so."""

from __future__ import annotations

import pytest

from apps.tasks.enums import Status
from apps.tasks.models import Task
from tests.engines.mjproxy.conftest import fake  # noqa: F401
from tests.engines.mjproxy.helpers import mjproxy_account, poll, start, step
from tests.fakes.mjproxy_server import seed_of
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db

NO_SEED_YET = {
    "code": 4,
    "description": "This task has no seed yet: it is known once the task has finished "
    "(or when its prompt sets --seed).",
    "result": None,
    "properties": {},
}


def _seeds(client, task_id: str) -> dict[str, object]:
    """The task's seed as each dialect shows it."""
    return {
        "mjproxy": client.get(f"/mj/task/{task_id}/image-seed").json()["result"],
        "ttapi": client.post("/midjourney/v1/seed", {"jobId": task_id}, format="json").json()[
            "data"
        ]["seed"],
        "ttapi_fetch": client.get(f"/midjourney/v1/fetch?jobId={task_id}").json()["data"]["seed"],
        "native": client.get(f"/api/v1/tasks/{task_id}").json()["seed"],
    }


def test_a_task_queued_for_mjproxy_has_no_seed_until_the_upstream_gives_it(
    funded,
    live_key,
    client_for,
    fake,  # noqa: F811
):
    mjproxy_account(fake)
    client = client_for(live_key)
    task_id = client.post("/mj/submit/imagine", {"prompt": "a lighthouse"}, format="json").json()[
        "result"
    ]
    drawn = Task.objects.get(pk=task_id).seed  # ours, drawn at acceptance
    assert drawn is not None
    assert client.get(f"/mj/task/{task_id}/image-seed").json() == NO_SEED_YET
    assert _seeds(client, task_id) == dict.fromkeys(
        ("mjproxy", "ttapi", "ttapi_fetch", "native"), None
    )
    # A seed the prompt fixes is known from the start.
    fixed = client.post(
        "/mj/submit/imagine", {"prompt": "a lighthouse --seed 77"}, format="json"
    ).json()["result"]
    assert _seeds(client, fixed) == {
        "mjproxy": "77",
        "ttapi": "77",
        "ttapi_fetch": "77",
        "native": 77,
    }
    # Assigned to the mjproxy account but not started yet: still none.
    assert step(task_id) == Status.SUBMITTED
    assert client.get(f"/mj/task/{task_id}/image-seed").json() == NO_SEED_YET
    task = start(task_id)
    fake.finish(task.upstream_job_id)
    assert poll(task_id).status == Status.SUCCESS
    real = seed_of(task.upstream_job_id)
    assert client.get(f"/mj/task/{task_id}/image-seed").json()["result"] == str(real)
    assert _seeds(client, task_id) == {
        "mjproxy": str(real),
        "ttapi": str(real),
        "ttapi_fetch": str(real),
        "native": real,
    }


def test_the_sandbox_reports_its_seed_once_the_job_started(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    task_id = client.post("/mj/submit/imagine", {"prompt": "a lighthouse"}, format="json").json()[
        "result"
    ]
    assert Task.objects.get(pk=task_id).status == Status.NOT_START
    assert client.get(f"/mj/task/{task_id}/image-seed").json() == NO_SEED_YET
    done = run_to_completion(task_id)
    assert done.status == Status.SUCCESS, done.fail_reason
    # The sandbox rendered with the seed drawn at acceptance: that is the image's seed.
    assert _seeds(client, task_id) == {
        "mjproxy": str(done.seed),
        "ttapi": str(done.seed),
        "ttapi_fetch": str(done.seed),
        "native": done.seed,
    }


def test_the_dashboard_shows_no_drawn_seed_before_the_start(funded, live_key, client_for, owner):
    from tests.dashboard.helpers import login

    client = client_for(live_key)
    queued = client.post("/mj/submit/imagine", {"prompt": "a lighthouse"}, format="json").json()
    fixed = client.post(
        "/mj/submit/imagine", {"prompt": "a lighthouse --seed 77"}, format="json"
    ).json()
    drawn = Task.objects.get(pk=queued["result"]).seed
    browser = login(owner)
    page = browser.get(f"/tasks/{queued['result']}/").content.decode()
    assert f'<dd class="mono">{drawn}</dd>' not in page
    assert '<dt>Seed</dt><dd class="mono">—</dd>' in page
    page = browser.get(f"/tasks/{fixed['result']}/").content.decode()
    assert '<dt>Seed</dt><dd class="mono">77</dd>' in page
