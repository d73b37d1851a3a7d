"""Native VIDEO refuses the fields it would not honour (docs/api.md, "No silently ignored
input"): a ``mask`` (only EDIT and VARY_REGION take one) and ``remix`` (remix mode is set on
the other new tasks; a video's extensions are remixed per press)."""

from __future__ import annotations

import pytest

from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url

from .conftest import snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"mask": "MASK"}, "mask"),
        ({"remix": True}, "remix"),
        ({"remix": False}, "remix"),
    ],
    ids=["mask", "remix-true", "remix-false"],
)
def test_native_video_refuses_a_mask_or_remix_naming_it(
    funded, live_key, client_for, sandbox, extra, field
):
    body = {"action": "VIDEO", "images": [png_data_url()], **extra}
    if body.get("mask") == "MASK":
        body["mask"] = png_data_url((255, 255, 255))
    before = snapshot(funded)

    response = client_for(live_key).post("/api/v1/tasks", body, format="json")

    assert response.status_code == 400, response.json()
    answer = response.json()
    assert answer["error"]["code"] == "validation_error", answer
    assert list(answer["error"]["details"]) == [field], answer
    assert "VIDEO takes no" in answer["error"]["details"][field][0]
    assert not Task.objects.exists()
    assert snapshot(funded) == before


def test_native_video_refuses_a_mask_on_an_extension_too(funded, live_key, client_for, sandbox):
    """The refusal is the body's, whichever video it asks for (here an extension)."""
    response = client_for(live_key).post(
        "/api/v1/tasks",
        {
            "action": "VIDEO",
            "parent": "1796472191370467465",
            "extend": True,
            "mask": png_data_url((255, 255, 255)),
        },
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert list(response.json()["error"]["details"]) == ["mask"]
