"""Image input decoding and validation (SPEC §4.5): pure, no database."""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageFile

from apps.core.errors import ValidationFailed
from apps.tasks.imageinput import (
    DEFAULT_MAX_BYTES,
    DecodedImage,
    decode_image,
    decode_images,
    is_url,
)


def encoded(image_format: str, size: tuple[int, int] = (12, 8), **save: object) -> bytes:
    buffer = io.BytesIO()
    mode = "P" if image_format == "GIF" else "RGB"
    Image.new(mode, size, 3 if mode == "P" else (200, 30, 40)).save(buffer, image_format, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims ``width`` x ``height`` but whose pixel stream is tiny.

    Built by hand so the test never allocates the pixels it describes.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def rejected(value: object, **kwargs: int) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        decode_image(value, field="base64", **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.fixture
def pixels_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- accepted inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_format", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_data_url_of_each_accepted_format(image_format: str, mime: str) -> None:
    data = encoded(image_format)

    decoded = decode_image(data_url(data, mime), field="base64")

    assert decoded == DecodedImage(data=data, mime=mime, format=image_format, width=12, height=8)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_bare_base64_of_each_accepted_format(image_format: str) -> None:
    data = encoded(image_format, (5, 9))

    decoded = decode_image(b64(data), field="base64")

    assert (decoded.format, decoded.width, decoded.height, decoded.data) == (
        image_format,
        5,
        9,
        data,
    )


def test_declared_mime_is_replaced_by_the_real_format() -> None:
    data = encoded("PNG")

    decoded = decode_image(data_url(data, "image/jpeg"), field="base64")

    assert (decoded.format, decoded.mime) == ("PNG", "image/png")
    assert decoded.data_url() == data_url(data, "image/png")


def test_data_url_with_extra_parameters_and_odd_case() -> None:
    data = encoded("PNG")

    decoded = decode_image(f"DATA:image/png;name=x.png;BASE64,{b64(data)}", field="base64")

    assert decoded.data == data


def test_line_wrapped_url_safe_unpadded_base64_is_accepted() -> None:
    data = encoded("PNG", (31, 17))
    text = base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))

    assert decode_image(f"  {wrapped}\r\n", field="base64").data == data


def test_phone_multi_picture_jpeg_is_reported_as_jpeg() -> None:
    buffer = io.BytesIO()
    frame = Image.new("RGB", (16, 16), (1, 2, 3))
    frame.save(buffer, "MPO", save_all=True, append_images=[frame])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"

    decoded = decode_image(b64(buffer.getvalue()), field="base64")

    assert (decoded.format, decoded.mime) == ("JPEG", "image/jpeg")


def test_repr_does_not_dump_the_bytes() -> None:
    decoded = decode_image(b64(encoded("PNG")), field="base64")

    assert "data=" not in repr(decoded)


# --- not images ------------------------------------------------------------------------------


def test_text_file_is_not_an_image() -> None:
    error = rejected(data_url(b"just some text, renamed to .png\n"))

    assert error.message == "base64 is not an image; send a PNG, JPEG, WEBP or GIF."
    assert error.details == {"field": "base64"}


@pytest.mark.parametrize("image_format", ["TIFF", "BMP", "ICO", "PDF"])
def test_other_real_formats_are_refused_by_name(image_format: str) -> None:
    error = rejected(b64(encoded(image_format)))

    assert error.message == (
        f"base64 is in {image_format} format; only PNG, JPEG, WEBP and GIF images are accepted."
    )
    assert error.details == {"field": "base64", "format": image_format}


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_truncated_image_is_refused(image_format: str) -> None:
    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, image_format)
    data = buffer.getvalue()

    error = rejected(b64(data[: len(data) // 2]))

    assert error.message == f"base64 is a damaged or truncated {image_format} image."


def test_png_with_a_corrupt_checksum_is_refused() -> None:
    data = bytearray(encoded("PNG"))
    data[-20] ^= 0xFF  # inside the IDAT chunk

    assert rejected(b64(bytes(data))).message == "base64 is a damaged or truncated PNG image."


# --- decompression bombs ---------------------------------------------------------------------


def test_30000_by_30000_png_is_refused_without_decoding_pixels(pixels_never_decoded: None) -> None:
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 200

    error = rejected(data_url(bomb))

    # Pillow's own guard trips in Image.open before the size is known to us.
    assert error.message == "base64 has more than 40,000,000 pixels, the maximum."
    assert error.details == {"field": "base64", "max_pixels": 40_000_000}


def test_oversized_dimensions_are_refused_from_the_header(pixels_never_decoded: None) -> None:
    error = rejected(b64(png_header_only(8000, 6000)))

    assert error.message == (
        "base64 is 8000x6000 pixels (48,000,000); the maximum is 40,000,000 pixels."
    )
    assert error.details == {
        "field": "base64",
        "max_pixels": 40_000_000,
        "width": 8000,
        "height": 6000,
    }


def test_pixel_limit_is_configurable() -> None:
    error = rejected(b64(encoded("PNG", (100, 100))), max_pixels=9_999)

    assert error.message == "base64 is 100x100 pixels (10,000); the maximum is 9,999 pixels."
    assert decode_image(b64(encoded("PNG", (100, 100))), field="f", max_pixels=10_000).width == 100


def test_pillow_bomb_warning_turned_into_an_error_is_still_a_clean_refusal() -> None:
    # 10000 x 9000 is above Pillow's warning threshold (~89.5 MP) but below its hard error.
    header = png_header_only(10000, 9000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        error = rejected(b64(header))

    assert error.message == "base64 has more than 40,000,000 pixels, the maximum."


def test_pillow_bomb_warning_left_as_a_warning_still_ends_in_our_size_check() -> None:
    with pytest.warns(Image.DecompressionBombWarning):
        error = rejected(b64(png_header_only(10000, 9000)))

    assert error.message == (
        "base64 is 10000x9000 pixels (90,000,000); the maximum is 40,000,000 pixels."
    )


# --- size ------------------------------------------------------------------------------------


def test_decoded_size_above_the_limit_is_refused() -> None:
    data = encoded("PNG")

    error = rejected(b64(data), max_bytes=len(data) - 1)

    assert error.message == (
        f"base64 is {len(data):,} bytes after decoding; the maximum is {len(data) - 1:,} bytes."
    )
    assert error.details == {"field": "base64", "bytes": len(data), "max_bytes": len(data) - 1}
    assert decode_image(b64(data), field="base64", max_bytes=len(data)).data == data


def test_default_limit_is_ten_mebibytes_and_is_checked_before_decoding() -> None:
    # Not valid base64 at all ("!" at the end): only a size check made before decoding can
    # produce the size message.
    oversized = "A" * (DEFAULT_MAX_BYTES // 3 * 4 + 4) + "!"

    error = rejected(oversized)

    assert DEFAULT_MAX_BYTES == 10 * 1024 * 1024
    assert error.message == (
        "base64 is 10,485,762 bytes after decoding; the maximum is 10,485,760 bytes (10 MiB)."
    )


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "base64 is empty; send the image as a data URL (data:image/png;base64,…) or base64."),
        (
            "   ",
            "base64 is empty; send the image as a data URL (data:image/png;base64,…) or base64.",
        ),
        ("data:image/png;base64,@@@@", "base64 is not valid base64 image data."),
        ("data:image/png;base64,", "base64 is not valid base64 image data."),
        ("not base64 at all!", "base64 is not valid base64 image data."),
        ("QUJDRA=A", "base64 is not valid base64 image data."),
        ("A", "base64 is not valid base64 image data."),
        ("data:image/png,iVBORw0KGgo=", "base64 must be base64-encoded (data:image/png;base64,…)."),
        (
            "data:image/png;base64",
            "base64 is not a valid data URL; expected data:image/png;base64,….",
        ),
        (
            "https://example.com/cat.png",
            "base64 is a URL, which is not accepted here; send the image as base64.",
        ),
        (12345, "base64 must be a string holding a data URL or base64; got int."),
        (None, "base64 must be a string holding a data URL or base64; got NoneType."),
    ],
)
def test_malformed_values(value: object, message: str) -> None:
    assert rejected(value).message == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.com/a.png", True),
        ("  HTTP://example.com/a.png  ", True),
        ("http://127.0.0.1:8000/x", True),
        ("https://", False),
        ("ftp://example.com/a.png", False),
        ("data:image/png;base64,AAAA", False),
        ("iVBORw0KGgo=", False),
        ("http://[::1", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_is_url(value: object, expected: bool) -> None:
    assert is_url(value) is expected


# --- arrays ----------------------------------------------------------------------------------


def test_decode_images_returns_each_image_in_order() -> None:
    values = [data_url(encoded("PNG", (3, 4))), b64(encoded("JPEG", (5, 6)))]

    decoded = decode_images(values, field="base64Array", min_count=2, max_count=5)

    assert [(d.format, d.width, d.height) for d in decoded] == [("PNG", 3, 4), ("JPEG", 5, 6)]


def test_six_blend_images_are_refused_before_any_is_decoded() -> None:
    values = ["not even an image"] * 6

    with pytest.raises(ValidationFailed) as info:
        decode_images(values, field="base64Array", min_count=2, max_count=5)

    assert info.value.message == "base64Array must contain between 2 and 5 images; got 6."
    assert info.value.details == {"field": "base64Array", "count": 6, "min": 2, "max": 5}


def test_one_blend_image_is_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_images([b64(encoded("PNG"))], field="base64Array", min_count=2, max_count=5)

    assert info.value.message == "base64Array must contain between 2 and 5 images; got 1."


def test_exact_count_is_phrased_as_exactly() -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_images([], field="images", min_count=1, max_count=1)

    assert info.value.message == "images must contain exactly 1 image; got 0."


def test_a_bad_element_is_named_by_its_index() -> None:
    values = [b64(encoded("PNG")), data_url(b"hello"), b64(encoded("PNG"))]

    with pytest.raises(ValidationFailed) as info:
        decode_images(values, field="base64Array", min_count=2, max_count=5)

    assert info.value.message == "base64Array[1] is not an image; send a PNG, JPEG, WEBP or GIF."
    assert info.value.details == {"field": "base64Array[1]"}


@pytest.mark.parametrize("values", ["data:image/png;base64,AAAA", None, 7, {"a": 1}])
def test_decode_images_needs_an_array(values: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_images(values, field="base64Array", min_count=2, max_count=5)  # type: ignore[arg-type]

    assert info.value.message == "base64Array must be an array of images."


def test_limits_apply_to_every_element() -> None:
    small, large = encoded("PNG", (2, 2)), encoded("PNG", (300, 300))

    with pytest.raises(ValidationFailed) as info:
        decode_images(
            [b64(small), b64(large)], field="base64Array", min_count=2, max_count=5, max_pixels=100
        )

    assert info.value.message == (
        "base64Array[1] is 300x300 pixels (90,000); the maximum is 100 pixels."
    )
