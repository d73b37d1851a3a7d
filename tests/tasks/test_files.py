"""Result files: stored under unguessable names, served publicly from /files/ (SPEC §4.4)."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from apps.tasks import storage
from apps.tasks.enums import Action
from apps.tasks.services.submit import task_submit

from .helpers import data_url, png_bytes, run_to_completion, sandbox_account, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client()  # no session, no API key


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_a_grid_is_stored_with_splits_and_thumbnails_and_served_without_auth(
    caller, organization, fund, client
):
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox --ar 16:9").task.pk
    )
    result = task.result
    key = result["key"]
    assert len(key) >= 32  # 24 random bytes, URL-safe: unguessable
    assert result["image"] == f"results/{key}/{task.pk}.png"
    assert result["thumb"] == f"results/{key}/{task.pk}.thumb.webp"
    assert result["splits"] == [f"results/{key}/{task.pk}-{n}.png" for n in range(1, 5)]
    assert result["split_thumbs"] == [
        f"results/{key}/{task.pk}-{n}.thumb.webp" for n in range(1, 5)
    ]
    assert (result["width"], result["height"], result["is_grid"]) == (1024, 576, True)

    url = storage.file_url(result["image"])
    assert url == f"{settings.PUBLIC_BASE_URL}/files/results/{key}/{task.pk}.png"
    response = client.get(url.removeprefix(settings.PUBLIC_BASE_URL))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(body(response))).size == (1024, 576)

    split = client.get(f"/files/{result['splits'][3]}")
    assert Image.open(io.BytesIO(body(split))).size == (512, 288)
    thumb = client.get(f"/files/{result['thumb']}")
    assert thumb["Content-Type"] == "image/webp"
    assert max(Image.open(io.BytesIO(body(thumb))).size) == 256


def test_inputs_are_stored_under_their_own_random_names(caller, organization, fund):
    fund(organization, 100_000)
    data = png_bytes()
    outcome = task_submit(
        caller=caller,
        action=Action.BLEND,
        images=[data_url(data)] * 2,
    )
    first, second = outcome.task.inputs
    assert first != second
    assert first.startswith("inputs/") and first.endswith("/input.png")
    assert storage.read_file(first) == data


@pytest.mark.parametrize(
    "path",
    [
        "results/../../etc/passwd",
        "results/%2e%2e/%2e%2e/secret.txt",
        "results/..%2f..%2fsecret.txt",
        "secret.txt",
        "other/file.png",
        "results/",
        "results/nothing-here/image.png",
        "/etc/passwd",
    ],
)
def test_files_outside_results_and_inputs_or_missing_are_not_found(client, path):
    default_storage.save("secret.txt", io.BytesIO(b"top secret"))
    response = client.get(f"/files/{path}")
    assert response.status_code == 404
    assert b"top secret" not in response.content


def test_a_directory_is_not_served(client):
    name = default_storage.save("results/some-key/image.png", io.BytesIO(png_bytes()))
    assert client.get(f"/files/{name.rsplit('/', 1)[0]}").status_code == 404
    assert client.get(f"/files/{name}").status_code == 200


def test_only_get_and_head_are_allowed(client):
    name = default_storage.save("results/some-key/image.png", io.BytesIO(png_bytes()))
    assert client.post(f"/files/{name}").status_code == 405
    assert client.delete(f"/files/{name}").status_code == 405
    assert default_storage.exists(name)


def test_delete_result_removes_every_file_of_a_result():
    before = stored_files(settings.MEDIA_ROOT)
    grid = Image.new("RGB", (64, 64), (10, 20, 30))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    result = storage.store_result(data=buffer.getvalue(), is_grid=True)
    assert len(stored_files(settings.MEDIA_ROOT)) == len(before) + 10
    storage.delete_result(result)
    assert stored_files(settings.MEDIA_ROOT) == before


def test_result_files_work_for_browser_clients(caller, organization, fund, client):
    """CORS for ``crossOrigin=anonymous`` loads, HEAD, ETag/304 and a telling download name."""
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    main = f"/files/{task.result['image']}"
    split = f"/files/{task.result['splits'][0]}"

    got = client.get(main, HTTP_ORIGIN="https://chat.example")
    assert got.status_code == 200
    assert got["Access-Control-Allow-Origin"] == "*"
    assert got["Content-Disposition"] == f'inline; filename="{task.pk}.png"'
    etag = got["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    content = body(got)

    head = client.head(main)
    assert head.status_code == 200
    assert head["Content-Length"] == str(len(content))
    assert head["Content-Type"] == "image/png"
    assert (head["ETag"], head["Access-Control-Allow-Origin"]) == (etag, "*")
    assert head.content == b""

    cached = client.get(main, HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304
    assert cached["ETag"] == etag and cached.content == b""
    assert client.get(main, HTTP_IF_NONE_MATCH='"something-else"').status_code == 200

    split_answer = client.get(split)
    assert split_answer["Content-Disposition"] == f'inline; filename="{task.pk}-1.png"'
    assert split_answer["ETag"] != etag
    assert client.head("/files/results/nothing-here/image.png").status_code == 404
