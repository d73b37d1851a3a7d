"""A finished video keeps at most the clips its batch asked for: an upstream listing more in
``videoUrls`` does not make us download (each up to ``MJPROXY_MAX_IMAGE_BYTES``, all held in
memory) or store them."""

from __future__ import annotations

import pytest

from apps.tasks.enums import Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.video import task_submit_video

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("asked", "listed"), [(1, 30), (2, 4)])
def test_clips_beyond_the_batch_are_neither_downloaded_nor_kept(
    funded, live_key, fake, asked, listed
):
    mjproxy_account(fake)
    outcome = task_submit_video(
        caller=Caller(organization=funded, api_key=live_key.api_key),
        images=[data_url(png_bytes())],
        batch_size=asked,
    )
    task = start(outcome.task.pk)
    assert task.status == Status.IN_PROGRESS, (task.fail_reason, task.error_code)
    (sent,) = fake.submits("/mj/submit/video")
    assert sent.body["batchSize"] == asked
    fake.finish(task.upstream_job_id)
    fake.jobs[task.upstream_job_id].batch_size = listed  # the upstream lists this many

    done = poll(task.pk)

    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    fetched = sorted(r.path for r in fake.requests if r.path.startswith("/videos/"))
    job = task.upstream_job_id
    assert fetched == [f"/videos/{job}-{n}.mp4" for n in range(1, asked + 1)]
    assert [name.rsplit("/", 1)[1] for name in done.result["videos"]] == [
        f"{task.pk}-{n}.mp4" for n in range(1, asked + 1)
    ]
