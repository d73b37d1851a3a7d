"""A result image the upstream serves that we cannot keep (cut off on the way, a decompression
bomb, not an image) fails the task at once with ``UPSTREAM_ERROR`` and its hold released:
never SUCCESS and charged, never a run of crash retries, and no file left behind."""

from __future__ import annotations

import io
import os

import pytest
from django.conf import settings
from PIL import Image

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import POLL_CRASHES
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.tasks.helpers import stored_files

from .helpers import mjproxy_account, poll, start

pytestmark = pytest.mark.django_db


def _noisy_png(side: int = 256) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


def _huge_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")  # a few KB on the wire
    return out.getvalue()


def _truncated() -> bytes:
    whole = _noisy_png()
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (_truncated, "The upstream's result image is damaged or truncated."),
        (
            lambda: _huge_png(12000),
            "The upstream's result image is 12000x12000 pixels (144,000,000); "
            "the maximum is 40,000,000 pixels.",
        ),
        (
            lambda: b"<html>oops</html>",
            "The upstream's result is not a PNG, JPEG, WEBP or GIF image.",
        ),
    ],
    ids=["cut_off_half_way", "decompression_bomb", "not_an_image"],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_result_we_cannot_keep_fails_the_task_and_releases_the_hold(
    funded, live_key, fake, served, reason
):
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    task = start(task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk)
    assert task.status == Status.IN_PROGRESS
    files_before = stored_files(settings.MEDIA_ROOT)
    fake.finish(task.upstream_job_id)
    fake.jobs[task.upstream_job_id].image = served()

    done = poll(task.pk)  # one poll step: no crash counted, no retry

    assert (done.status, done.error_code, done.fail_reason) == (
        Status.FAILURE,
        ErrorCode.UPSTREAM_ERROR,
        reason,
    )
    assert POLL_CRASHES not in (done.engine_state or {})
    assert done.result == {} and done.tokens_captured is None
    kinds = list(
        LedgerEntry.objects.filter(task_id=task.pk).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EntryKind.HOLD, EntryKind.RELEASE]
    balance = balance_get(organization=funded)
    assert (balance.available, balance.held) == (1_000_000, 0)
    assert stored_files(settings.MEDIA_ROOT) == files_before
    assert Task.objects.get(pk=task.pk).status == Status.FAILURE
