"""A result image is checked whole before it is stored (``storage.store_result``): a file cut
off on the way, or one declaring more pixels than ``RESULT_MAX_PIXELS``, is refused with a
``PermanentEngineError`` (``UPSTREAM_ERROR``) and nothing is stored, so no task can succeed
with a picture whose thumbnail and splits can never be made or would take gigabytes."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from django.conf import settings
from PIL import Image

from apps.tasks import storage

from .helpers import stored_files

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


def noisy(image_format: str, side: int = 256) -> bytes:
    """An image of random pixels, so its coded data is large and any cut lands inside it."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    if image_format == "GIF":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` one-bit pixels, all black: a few
    kilobytes on the wire however large the picture."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def refused(data: bytes) -> storage.ResultRefused:
    before = stored_files(settings.MEDIA_ROOT)
    with pytest.raises(storage.ResultRefused) as caught:
        storage.store_result(data=data, is_grid=True, stem="1234")
    assert stored_files(settings.MEDIA_ROOT) == before
    return caught.value


@pytest.mark.parametrize("image_format", FORMATS)
@pytest.mark.parametrize("kept", [0.25, 0.5, 0.99])
def test_a_result_cut_off_on_the_way_is_refused_and_nothing_is_stored(image_format, kept):
    whole = noisy(image_format)
    # The whole file is kept, and its thumbnail and splits can be made.
    result = storage.store_result(data=whole, is_grid=True, stem="1234")
    assert (result["width"], result["height"]) == (256, 256)
    assert storage.read_file(result["image"]) == whole
    assert len(storage.derive_files(result)) == 9
    storage.delete_result(result)

    error = refused(whole[: int(len(whole) * kept)])
    assert error.message == "The upstream's result image is damaged or truncated."


def test_a_png_cut_off_right_before_its_end_chunk_is_refused():
    whole = noisy("PNG")
    assert whole.endswith(b"IEND\xaeB`\x82")
    error = refused(whole[:-12])
    assert error.message == "The upstream's result image is damaged or truncated."


def test_a_result_that_is_not_an_image_or_in_another_format_is_refused():
    assert refused(b"<html>502 Bad Gateway</html>").message == (
        "The upstream's result is not a PNG, JPEG, WEBP or GIF image."
    )
    out = io.BytesIO()
    Image.new("RGB", (32, 32)).save(out, format="BMP")
    assert refused(out.getvalue()).message == (
        "The upstream's result is not a PNG, JPEG, WEBP or GIF image."
    )


def test_a_result_with_more_pixels_than_the_limit_is_refused_before_it_is_decoded():
    """12000x12000 (144 M pixels, below Pillow's own hard limit): a few kilobytes that would
    decode to ~432 MB for every thumbnail or split."""
    bomb = png_declaring(12000, 12000)
    assert len(bomb) < 100_000
    with pytest.warns(Image.DecompressionBombWarning):
        error = refused(bomb)
    assert error.message == (
        "The upstream's result image is 12000x12000 pixels (144,000,000); "
        "the maximum is 40,000,000 pixels."
    )


def test_a_result_beyond_pillows_own_limit_is_refused_too():
    """Above twice Pillow's limit its ``open`` raises before the size can be read."""
    error = refused(png_declaring(20000, 20000))
    assert (
        error.message == "The upstream's result image has more than 40,000,000 pixels, the maximum."
    )


def test_the_pixel_limit_is_a_setting(settings):
    settings.RESULT_MAX_PIXELS = 100 * 100
    result = storage.store_result(data=png_declaring(100, 100), is_grid=False, stem="1234")
    assert (result["width"], result["height"]) == (100, 100)
    storage.delete_result(result)
    error = refused(png_declaring(101, 100))
    assert error.message == (
        "The upstream's result image is 101x100 pixels (10,100); the maximum is 10,000 pixels."
    )
