"""Result files: stored under unguessable names, served publicly from /files/ (SPEC §4.4)."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from apps.tasks import lifecycle, storage
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
    result = storage.store_result(data=buffer.getvalue(), is_grid=True, stem="1234")
    # Only the grid is stored at once; its thumbnail, splits and their thumbnails come after.
    assert len(stored_files(settings.MEDIA_ROOT)) == len(before) + 1
    storage.delete_result(result)
    assert stored_files(settings.MEDIA_ROOT) == before

    result = storage.store_result(data=buffer.getvalue(), is_grid=True, stem="1234")
    assert len(storage.derive_files(result)) == 9
    assert len(stored_files(settings.MEDIA_ROOT)) == len(before) + 10
    storage.delete_result(result)
    assert stored_files(settings.MEDIA_ROOT) == before

    # Not named after a task: the /files/ route could not find it, so all are made at once.
    result = storage.store_result(data=buffer.getvalue(), is_grid=True)
    assert len(stored_files(settings.MEDIA_ROOT)) == len(before) + 10
    storage.delete_result(result)
    assert stored_files(settings.MEDIA_ROOT) == before


def _grid_png(size: tuple[int, int] = (64, 48)) -> bytes:
    grid = Image.new("RGB", size, (10, 20, 30))
    for index, (left, top) in enumerate(((0, 0), (32, 0), (0, 24), (32, 24)), start=1):
        grid.paste((index * 40, 0, 0), (left, top, left + 32, top + 24))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def test_derived_files_are_made_once_whoever_asks_first_and_match_the_grid():
    result = storage.store_result(data=_grid_png(), is_grid=True, stem="1234")
    assert not any(default_storage.exists(name) for name in storage.derived_names(result))
    assert storage.derive_files(result, [result["splits"][2]]) == [result["splits"][2]]
    third = Image.open(io.BytesIO(storage.read_file(result["splits"][2])))
    assert third.size == (32, 24) and third.convert("RGB").getpixel((5, 5)) == (120, 0, 0)
    # The background step makes the other eight; a second run makes nothing.
    assert len(storage.derive_files(result)) == 8
    assert storage.derive_files(result) == []
    assert storage.derive_files(result, ["results/elsewhere/1234-1.png"]) == []
    thumb = Image.open(io.BytesIO(storage.read_file(result["split_thumbs"][0])))
    assert thumb.format == "WEBP" and thumb.size == (32, 24)


def test_s3_style_storage_gets_every_file_before_the_task_succeeds(monkeypatch):
    """Storage serving its own URLs cannot ask us for a missing file: all made at once."""
    monkeypatch.setattr(storage, "served_by_us", lambda: False)
    result = storage.store_result(data=_grid_png(), is_grid=True, stem="1234")
    assert all(default_storage.exists(name) for name in storage.derived_names(result))
    storage.delete_result(result)


def test_a_split_not_made_yet_is_made_on_its_first_request(caller, organization, fund, client):
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    result = task.result
    assert not any(default_storage.exists(name) for name in storage.derived_names(result))
    for name in storage.derived_names(result):
        answer = client.get(f"/files/{name}")
        assert answer.status_code == 200, name
        assert body(answer) == storage.read_file(name)
    grid = Image.open(io.BytesIO(storage.read_file(result["image"]))).convert("RGB")
    split = Image.open(io.BytesIO(storage.read_file(result["splits"][1]))).convert("RGB")
    assert split.tobytes() == grid.crop((512, 0, 1024, 512)).tobytes()


def test_a_missing_name_that_is_not_a_derived_file_of_that_task_is_not_made(
    caller, organization, fund, client
):
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    key, pk = task.result["key"], task.pk
    before = stored_files(settings.MEDIA_ROOT)
    for path in (
        f"results/{key}/{pk}-5.png",  # a fifth split
        f"results/{key}/{pk}-1.jpg",
        f"results/{key}/{pk}.png.thumb.webp",
        f"results/{'x' * 32}/{pk}-1.png",  # another key
        f"results/{key}/9{pk}-1.png",  # another task
        f"inputs/{key}/{pk}-1.png",
    ):
        assert client.get(f"/files/{path}").status_code == 404, path
    assert stored_files(settings.MEDIA_ROOT) == before


def test_an_upscale_has_no_splits_to_make(caller, organization, fund, client):
    fund(organization, 100_000)
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    assert grid.result["is_grid"]
    single = storage.store_result(data=_grid_png(), is_grid=False, stem=grid.pk)
    assert single["splits"] == [] and single["split_thumbs"] == []
    assert client.get(f"/files/results/{single['key']}/{grid.pk}-1.png").status_code == 404


def test_success_sends_the_low_priority_derive_message(caller, organization, fund, monkeypatch):
    sent: list[tuple[str, tuple[object, ...], int | None]] = []
    monkeypatch.setattr(
        lifecycle,
        "send_after_commit",
        lambda name, *args, priority=None, **_: sent.append((name, args, priority)),
    )
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    assert ("tasks.derive_files", (task.pk,), lifecycle.DERIVE_PRIORITY) in sent
    lifecycle.task_derive_files(task_id=task.pk)
    assert all(default_storage.exists(name) for name in storage.derived_names(task.result))


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


def test_a_split_of_a_result_whose_image_is_gone_is_not_found(caller, organization, fund, client):
    fund(organization, 100_000)
    sandbox_account()
    task = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    default_storage.delete(task.result["image"])
    assert client.get(f"/files/{task.result['splits'][0]}").status_code == 404
    assert not default_storage.exists(task.result["splits"][0])
