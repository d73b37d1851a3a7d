"""The editor and retexture on the mjproxy engine: the Plus routes against the fake upstream,
and a clear UNSUPPORTED_BY_UPSTREAM where the upstream has no such route."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit

from .helpers import data_url, mjproxy_account, png_bytes, start
from .test_flow import _finish

pytestmark = pytest.mark.django_db

IMAGE = png_bytes((30, 90, 200))


def _half_mask() -> bytes:
    mask = Image.new("L", (48, 48), 0)
    mask.paste(255, (0, 0, 24, 48))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


MASK = _half_mask()


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


def _sent_picture(value: str) -> Image.Image:
    assert value.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1]))).convert("RGBA")


def test_an_edit_goes_to_the_edits_route_as_one_picture_with_the_mask_transparent(
    funded, live_key, fake
):
    """trueai-org's SubmitEditsDTO: {prompt, image}; the area to repaint is transparent."""
    mjproxy_account(fake)
    task = _edit(funded, live_key)
    (sent,) = fake.submits("/mj/submit/edits")
    assert set(sent.body) >= {"prompt", "image"} and sent.body["prompt"] == "a green meadow"
    assert "base64Array" not in sent.body and "maskBase64" not in sent.body
    picture = _sent_picture(sent.body["image"])
    assert picture.size == (48, 48)
    # The mask's left half is white: transparent there, the picture's own pixels elsewhere.
    assert picture.getpixel((5, 20))[3] == 0
    assert picture.getpixel((40, 20)) == (30, 90, 200, 255)
    done = _finish(fake, task)
    assert done.action == Action.EDIT and done.result["is_grid"] is True


def test_a_retexture_goes_to_the_retexture_route(funded, live_key, fake):
    mjproxy_account(fake)
    task = _edit(funded, live_key, Action.RETEXTURE)
    (sent,) = fake.submits("/mj/submit/retexture")
    assert sent.body["prompt"] == "a green meadow" and "maskBase64" not in sent.body
    assert "base64Array" not in sent.body
    assert base64.b64decode(sent.body["image"].split(",", 1)[1]) == IMAGE
    assert _finish(fake, task).status == Status.SUCCESS


def test_the_fake_refuses_a_retexture_without_image_as_trueai_does(fake):
    """The fake speaks the real contract: the old guessed body (base64Array) is refused."""
    answer = requests.post(
        f"{fake.base_url}/mj/submit/retexture",
        json={"prompt": "a green meadow", "base64Array": [data_url(IMAGE)]},
        headers={"mj-api-secret": "upstream-secret"},
        timeout=5,
    ).json()
    assert answer["code"] == 4 and answer["result"] is None


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
