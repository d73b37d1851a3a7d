"""Image references end to end through the sandbox (issue 17): an uploaded image used as
``--sref`` colours the grid, as ``--cref``/``--oref`` it appears in every quadrant."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageStat
from rest_framework.test import APIClient

from apps.tasks import storage
from apps.tasks.enums import Status
from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url, run_to_completion

from .test_fidelity_mjproxy import fetch, submit, trueai_imagine

pytestmark = pytest.mark.django_db

BLUE = (0, 0, 255)


def picture(task: Task) -> Image.Image:
    with Image.open(io.BytesIO(storage.read_file(task.result["image"]))) as image:
        return image.convert("RGB")


def blueness(image: Image.Image) -> float:
    red, green, blue = ImageStat.Stat(image).mean
    return blue - (red + green) / 2


@pytest.fixture
def api(live_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    return client


def upload(api: APIClient, colour: tuple[int, int, int]) -> str:
    answer = api.post("/api/v1/uploads", {"images": [png_data_url(colour)]}, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()["urls"][0]


def imagine(api: APIClient, prompt: str) -> Task:
    answer = api.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt}, format="json")
    assert answer.status_code == 201, answer.json()
    task = run_to_completion(answer.json()["id"])
    assert task.status == Status.SUCCESS
    return task


def test_a_style_reference_gives_the_grid_its_colours(api, funded, sandbox):
    url = upload(api, BLUE)
    plain = imagine(api, "a red barn --seed 42 --v 7")
    styled = imagine(api, f"a red barn --sref {url} --seed 42 --v 7")
    assert styled.params["references"] == {"sref": [url.split("/files/", 1)[1]]}
    assert blueness(picture(styled)) > blueness(picture(plain)) + 60


@pytest.mark.parametrize(("kind", "version"), [("cref", "6.1"), ("oref", "7")])
def test_a_character_or_object_reference_appears_in_every_quadrant(
    api, funded, sandbox, kind, version
):
    url = upload(api, BLUE)
    task = imagine(api, f"a knight --{kind} {url} --v {version}")
    image = picture(task)
    width, height = image.size
    for x, y in ((1, 1), (3, 1), (1, 3), (3, 3)):
        assert image.getpixel((x * width // 4, y * height // 4)) == BLUE


def test_mjproxy_upload_then_sref_through_the_proxy_dialect(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    uploaded = client.post(
        "/mj/submit/upload-discord-images", {"base64Array": [png_data_url(BLUE)]}, format="json"
    ).json()
    assert uploaded["code"] == 1, uploaded
    (url,) = uploaded["result"]
    grid = fetch(
        client, submit(client, "/mj/submit/imagine", trueai_imagine(f"a fox --sref {url}"))
    )
    assert Task.objects.get(pk=grid["id"]).params["references"]["sref"]


def test_ttapi_imagine_with_a_reference(funded, live_key, client_for, sandbox, api):
    url = upload(api, BLUE)
    client = client_for(live_key)
    answer = client.post(
        "/midjourney/v1/imagine", {"prompt": f"a knight --oref {url} --v 7"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    task = run_to_completion(answer.json()["data"]["jobId"])
    assert task.status == Status.SUCCESS and task.params["references"]["oref"]
