"""The editor and retexture (issue 17) end to end through the sandbox: native API and the
mj-proxy Plus routes, charged per the price table, with the pictures really changed."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat
from rest_framework.test import APIClient

from apps.billing.selectors import price_get
from apps.engines.sandbox import render
from apps.tasks import storage
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from tests.tasks.helpers import data_url, png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

SIDE = 64


def striped() -> bytes:
    """A picture with structure: horizontal bands of light and dark."""
    image = Image.new("RGB", (SIDE, SIDE), (30, 30, 30))
    for top in range(0, SIDE, 16):
        image.paste((230, 230, 230), (0, top, SIDE, top + 8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def left_half_mask() -> bytes:
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(255, (0, 0, SIDE // 2, SIDE))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def api(live_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    return client


def quadrant(task: Task, n: int = 0) -> Image.Image:
    png = render.split_grid(storage.read_file(task.result["image"]))[n]
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def source_at(size: tuple[int, int]) -> Image.Image:
    with Image.open(io.BytesIO(striped())) as image:
        return image.convert("RGB").resize(size)


def test_native_edit_repaints_only_the_masked_area(api, funded, sandbox):
    before = snapshot(funded)[0]
    answer = api.post(
        "/api/v1/tasks",
        {
            "action": "EDIT",
            "prompt": "a green meadow",
            "images": [data_url(striped())],
            "mask": data_url(left_half_mask()),
        },
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    task = run_to_completion(answer.json()["id"])
    assert task.status == Status.SUCCESS and task.result["is_grid"] is True
    assert task.price == price_get(action=Action.EDIT, mode=Mode.FAST)
    assert snapshot(funded)[0] == before - task.price
    result = quadrant(task)
    width, height = result.size
    source = source_at(result.size)
    kept = ImageChops.difference(
        result.crop((width // 2 + 2, 0, width, height)),
        source.crop((width // 2 + 2, 0, width, height)),
    )
    assert max(ImageStat.Stat(kept).mean) < 4  # the unmasked half is the source
    changed = ImageChops.difference(
        result.crop((0, 0, width // 2 - 2, height)), source.crop((0, 0, width // 2 - 2, height))
    )
    assert max(ImageStat.Stat(changed).mean) > 20  # the masked half is repainted
    assert task.buttons  # U1…U4, V1…V4 like any grid


def test_an_enlarged_transparent_canvas_is_outpainted(api, funded, sandbox):
    canvas = Image.new("RGBA", (SIDE * 2, SIDE), (0, 0, 0, 0))
    with Image.open(io.BytesIO(striped())) as picture:
        canvas.paste(picture.convert("RGBA"), (SIDE // 2, 0))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    task = run_to_completion(
        api.post(
            "/api/v1/tasks",
            {
                "action": "EDIT",
                "prompt": "a red desert",
                "images": [data_url(out.getvalue())],
                "mask": png_data_url((0, 0, 0), (SIDE * 2, SIDE)),
            },
            format="json",
        ).json()["id"]
    )
    assert task.status == Status.SUCCESS
    result = quadrant(task)
    edge = result.crop((0, 0, result.width // 8, result.height))
    red, green, blue = ImageStat.Stat(edge).mean
    assert abs(red - 128) + abs(green - 128) + abs(blue - 128) > 30  # not the grey canvas


def test_native_retexture_keeps_the_shapes_and_changes_the_surface(api, funded, sandbox):
    answer = api.post(
        "/api/v1/tasks",
        {"action": "RETEXTURE", "prompt": "made of blue glass", "images": [data_url(striped())]},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    task = run_to_completion(answer.json()["id"])
    assert task.status == Status.SUCCESS
    assert task.price == price_get(action=Action.RETEXTURE, mode=Mode.FAST)
    result = quadrant(task)
    source = source_at(result.size)
    # Shapes kept: the light bands are still the light bands …
    band = (result.width // 2, result.height * 4 // SIDE)
    gap = (result.width // 2, result.height * 12 // SIDE)
    assert sum(result.getpixel(band)) > sum(result.getpixel(gap)) + 150
    # … surfaces restyled: the grey bands are now blue.
    red, _green, blue = result.getpixel(band)
    assert blue > red + 40 and source.getpixel(band)[2] == source.getpixel(band)[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "EDIT", "prompt": "a cat", "images": [png_data_url()]}, "mask"),
        ({"action": "EDIT", "prompt": "a cat", "mask": png_data_url()}, "images"),
        ({"action": "IMAGINE", "prompt": "a cat", "mask": png_data_url()}, "mask"),
        ({"action": "RETEXTURE", "images": [png_data_url()]}, "prompt"),
    ],
)
def test_an_edit_without_what_it_needs_is_refused(api, funded, sandbox, body, field):
    before = snapshot(funded)
    answer = api.post("/api/v1/tasks", body, format="json")
    assert answer.status_code == 400, answer.json()
    assert field in str(answer.json()["error"])
    assert snapshot(funded) == before


def test_mjproxy_edits_and_retexture_routes(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    edits = client.post(
        "/mj/submit/edits",
        {
            "action": "EDITS",
            "prompt": "a green meadow",
            "base64Array": [data_url(striped())],
            "maskBase64": data_url(left_half_mask()),
        },
        format="json",
    ).json()
    assert edits["code"] in (1, 22), edits
    edited = run_to_completion(edits["result"])
    assert (edited.action, edited.status) == (Action.EDIT, Status.SUCCESS)
    fetched = client.get(f"/mj/task/{edited.pk}/fetch").json()
    assert fetched["status"] == "SUCCESS" and fetched["imageUrl"]

    retexture = client.post(
        "/mj/submit/retexture",
        {"prompt": "made of blue glass", "image": data_url(striped())},
        format="json",
    ).json()
    assert retexture["code"] in (1, 22), retexture
    assert run_to_completion(retexture["result"]).action == Action.RETEXTURE

    before = snapshot(funded)
    missing = client.post(
        "/mj/submit/edits",
        {"prompt": "a cat", "base64Array": [png_data_url()]},
        format="json",
    ).json()
    assert missing["code"] == 4 and "maskBase64" in missing["description"], missing
    assert snapshot(funded) == before
