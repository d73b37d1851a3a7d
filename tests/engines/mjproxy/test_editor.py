"""The editor and retexture on the mjproxy engine: the Plus routes against the fake upstream,
and a clear UNSUPPORTED_BY_UPSTREAM where the upstream has no such route."""

from __future__ import annotations

import base64

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit

from .helpers import data_url, mjproxy_account, png_bytes, start
from .test_flow import _finish

pytestmark = pytest.mark.django_db

IMAGE = png_bytes((30, 90, 200))
MASK = png_bytes((255, 255, 255), size=48)


def _edit(funded, live_key, action: str = Action.EDIT):
    extra = {"mask": data_url(MASK)} if action == Action.EDIT else {}
    outcome = task_submit(
        caller=Caller(organization=funded, api_key=live_key.api_key),
        action=action,
        prompt="a green meadow",
        images=[data_url(IMAGE)],
        **extra,
    )
    return start(outcome.task.pk)


def test_an_edit_goes_to_the_edits_route_with_image_and_mask(funded, live_key, fake):
    mjproxy_account(fake)
    task = _edit(funded, live_key)
    (sent,) = fake.submits("/mj/submit/edits")
    assert sent.body["action"] == "EDITS" and sent.body["prompt"] == "a green meadow"
    (image,) = sent.body["base64Array"]
    assert base64.b64decode(image.split(",", 1)[1]) == IMAGE
    assert base64.b64decode(sent.body["maskBase64"].split(",", 1)[1]) == MASK
    done = _finish(fake, task)
    assert done.action == Action.EDIT and done.result["is_grid"] is True


def test_a_retexture_goes_to_the_retexture_route(funded, live_key, fake):
    mjproxy_account(fake)
    task = _edit(funded, live_key, Action.RETEXTURE)
    (sent,) = fake.submits("/mj/submit/retexture")
    assert sent.body["action"] == "RETEXTURE" and "maskBase64" not in sent.body
    assert _finish(fake, task).status == Status.SUCCESS


@pytest.mark.parametrize("action", [Action.EDIT, Action.RETEXTURE])
def test_an_upstream_without_the_plus_routes_fails_clearly_and_refunds(
    funded, live_key, fake, action
):
    mjproxy_account(fake)
    fake.supports_edits = False
    before = balance_get(organization=funded)
    task = _edit(funded, live_key, action)
    assert task.status == Status.FAILURE
    assert task.error_code == ErrorCode.UNSUPPORTED_BY_UPSTREAM
    assert "has no /mj/submit/" in task.fail_reason
    after = balance_get(organization=funded)
    assert (after.available, after.held) == (before.available, 0)
