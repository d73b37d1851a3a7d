"""Result files answer byte ranges, as video players ask for them (RFC 9110 §14)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from apps.tasks import views

pytestmark = pytest.mark.django_db

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def url() -> str:
    name = default_storage.save("results/rangetest/clip.mp4", ContentFile(DATA))
    return f"/files/{name}"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=10000-", 10000, 10239), ("bytes=-40", 10200, 10239)],
)
def test_a_single_range_is_a_partial_answer(url: str, header: str, first: int, last: int) -> None:
    response = Client().get(url, HTTP_RANGE=header)
    assert response.status_code == 206
    assert response["Content-Type"] == "video/mp4"
    assert response["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response["Accept-Ranges"] == "bytes"
    assert response.content == DATA[first : last + 1]


def test_an_unsatisfiable_range_is_416_and_no_range_is_the_whole_file(url: str) -> None:
    refused = Client().get(url, HTTP_RANGE="bytes=20000-")
    assert refused.status_code == 416
    assert refused["Content-Range"] == f"bytes */{len(DATA)}"
    whole = Client().get(url)
    assert whole.status_code == 200
    assert whole["Accept-Ranges"] == "bytes"
    assert b"".join(whole.streaming_content) == DATA
    # Several ranges at once are not worth a multipart answer: the whole file is valid too.
    several = Client().get(url, HTTP_RANGE="bytes=0-1,5-6")
    assert several.status_code == 200


def test_a_range_answer_is_capped(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "MAX_RANGE_BYTES", 1000)
    response = Client().get(url, HTTP_RANGE="bytes=0-")
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 0-999/{len(DATA)}"
    assert len(response.content) == 1000
