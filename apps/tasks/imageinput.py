"""Decoding and validating client-supplied images (SPEC §4.5).

Clients send images as data URLs (``data:image/png;base64,…``) or, very often with
midjourney-proxy clients, as bare base64. Everything here treats the bytes as hostile:

* the size is bounded before decoding the base64 and again after;
* Pillow is only allowed to try the four formats we accept, which keeps its less-travelled
  parsers (and their CVEs) out of reach;
* the pixel count is read from the header and checked before a single pixel is decoded, so a
  30000x30000 PNG of a few hundred bytes (a decompression bomb) costs nothing;
* only then are the pixels decoded, which is what proves the file is an image and not a text
  file with a ``.png`` name.

http(s) URLs are not handled here: ``is_url`` lets callers route them to the SSRF-guarded
fetcher, whose bytes then come back through the same checks.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from apps.core.errors import ValidationFailed

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "decode_image",
    "decode_images",
    "is_url",
]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000

#: Pillow format name → the MIME type we report.
ACCEPTED_FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# Phones save multi-picture JPEGs that Pillow reports as MPO; the file is an ordinary JPEG to
# every other reader, so it is accepted and reported as one.
_PILLOW_FORMATS: dict[str, str] = {**{f: f for f in ACCEPTED_FORMATS}, "MPO": "JPEG"}

_DATA_URL_RE = re.compile(
    r"^data:(?P<mime>[^,;]*)(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.S | re.I
)
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")

# Magic numbers of formats people commonly try, so the refusal can say what the file is.
_KNOWN_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"8BPS", "PSD"),
)


@dataclass(frozen=True)
class DecodedImage:
    data: bytes = dataclass_field(repr=False)
    mime: str
    #: ``PNG``, ``JPEG``, ``WEBP`` or ``GIF``.
    format: str
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def is_url(value: object) -> bool:
    """True for an absolute http(s) URL with a host: it must be fetched, not decoded."""
    if not isinstance(value, str):
        return False
    candidate = value.strip()
    if not candidate.lower().startswith(("http://", "https://")):
        return False
    try:
        return bool(urlsplit(candidate).hostname)
    except ValueError:
        return False


def decode_image(
    value: str,
    *,
    field: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode a data URL or bare base64 string into a verified PNG/JPEG/WEBP/GIF image.

    ``field`` names the request field in error messages (``images[2]``). A MIME type
    declared in the data URL is ignored: the format is what the bytes say it is.
    """
    if not isinstance(value, str):
        raise ValidationFailed(
            f"{field} must be a string holding a data URL or base64; got {type(value).__name__}.",
            details={"field": field},
        )
    text = value.strip()
    if not text:
        raise ValidationFailed(
            f"{field} is empty; send the image as a data URL (data:image/png;base64,…) or base64.",
            details={"field": field},
        )
    if is_url(text):
        raise ValidationFailed(
            f"{field} is a URL, which is not accepted here; send the image as base64.",
            details={"field": field},
        )
    if text[:5].lower() == "data:":
        text = _data_url_payload(text, field)
    data = _decode_base64(text, field=field, max_bytes=max_bytes)
    image_format, width, height = _inspect(data, field=field, max_pixels=max_pixels)
    return DecodedImage(
        data=data,
        mime=ACCEPTED_FORMATS[image_format],
        format=image_format,
        width=width,
        height=height,
    )


def decode_images(
    values: Sequence[str],
    *,
    field: str,
    min_count: int,
    max_count: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[DecodedImage]:
    """Decode an array of images (blend: 2-5), naming each element in errors (``field[i]``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValidationFailed(f"{field} must be an array of images.", details={"field": field})
    count = len(values)
    if not min_count <= count <= max_count:
        expected = (
            f"exactly {min_count} image{'s' if min_count != 1 else ''}"
            if min_count == max_count
            else f"between {min_count} and {max_count} images"
        )
        raise ValidationFailed(
            f"{field} must contain {expected}; got {count}.",
            details={"field": field, "count": count, "min": min_count, "max": max_count},
        )
    return [
        decode_image(item, field=f"{field}[{index}]", max_bytes=max_bytes, max_pixels=max_pixels)
        for index, item in enumerate(values)
    ]


def _data_url_payload(text: str, field: str) -> str:
    match = _DATA_URL_RE.match(text)
    if match is None:
        raise ValidationFailed(
            f"{field} is not a valid data URL; expected data:image/png;base64,….",
            details={"field": field},
        )
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        raise ValidationFailed(
            f"{field} must be base64-encoded (data:image/png;base64,…).",
            details={"field": field},
        )
    return match["data"]


def _describe_size(size: int) -> str:
    mib = 1024 * 1024
    if size % mib == 0:
        return f"{size:,} bytes ({size // mib} MiB)"
    return f"{size:,} bytes"


def _decode_base64(text: str, *, field: str, max_bytes: int) -> bytes:
    # Line-wrapped (MIME) and URL-safe base64 both occur in the wild; padding is often dropped.
    body = "".join(text.split()).translate(_URLSAFE_TO_STANDARD).rstrip("=")
    invalid = ValidationFailed(f"{field} is not valid base64 image data.", details={"field": field})
    # Refuse oversized input before paying for the decode, or even for checking it.
    decoded_size = len(body) * 3 // 4
    if decoded_size > max_bytes:
        raise _too_many_bytes(field, decoded_size, max_bytes)
    if not body or len(body) % 4 == 1:
        raise invalid
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(data) > max_bytes:  # pragma: no cover - the estimate above is exact
        raise _too_many_bytes(field, len(data), max_bytes)
    return data


def _too_many_bytes(field: str, size: int, max_bytes: int) -> ValidationFailed:
    return ValidationFailed(
        f"{field} is {_describe_size(size)} after decoding; "
        f"the maximum is {_describe_size(max_bytes)}.",
        details={"field": field, "bytes": size, "max_bytes": max_bytes},
    )


def _not_an_image(field: str, data: bytes) -> ValidationFailed:
    for offset, signature, name in _KNOWN_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return _wrong_format(field, name)
    return ValidationFailed(
        f"{field} is not an image; send a PNG, JPEG, WEBP or GIF.",
        details={"field": field},
    )


def _wrong_format(field: str, name: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field} is in {name} format; only PNG, JPEG, WEBP and GIF images are accepted.",
        details={"field": field, "format": name},
    )


def _too_many_pixels(
    field: str, max_pixels: int, size: tuple[int, int] | None = None
) -> ValidationFailed:
    details: dict[str, object] = {"field": field, "max_pixels": max_pixels}
    if size is None:
        return ValidationFailed(
            f"{field} has more than {max_pixels:,} pixels, the maximum.", details=details
        )
    width, height = size
    details.update(width=width, height=height)
    return ValidationFailed(
        f"{field} is {width}x{height} pixels ({width * height:,}); "
        f"the maximum is {max_pixels:,} pixels.",
        details=details,
    )


def _inspect(data: bytes, *, field: str, max_pixels: int) -> tuple[str, int, int]:
    """Return (format, width, height) after proving ``data`` is a whole, sane image."""
    allowed = list(ACCEPTED_FORMATS)  # MPO has no opener of its own; JPEG's returns it
    try:
        # Image.open reads only the header; nothing below decodes pixels until load().
        with Image.open(io.BytesIO(data), formats=allowed) as image:
            image_format = _PILLOW_FORMATS.get(image.format or "")
            if image_format is None:  # pragma: no cover - formats= already restricts this
                raise _wrong_format(field, image.format or "unknown")
            width, height = image.size
            if width <= 0 or height <= 0:
                raise _not_an_image(field, data)
            if width * height > max_pixels:
                raise _too_many_pixels(field, max_pixels, (width, height))
            image.verify()
        with Image.open(io.BytesIO(data), formats=allowed) as image:
            if image_format == "JPEG":
                # A scaled-down JPEG decode still walks all the entropy-coded data, so it
                # catches truncation at a fraction of the memory.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ValidationFailed:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fires in open() above 2x its limit, before we see the size.
        raise _too_many_pixels(field, max_pixels) from None
    except UnidentifiedImageError:
        raise _not_an_image(field, data) from None
    except Exception:
        # Malformed files surface from Pillow's decoders as OSError, SyntaxError, ValueError,
        # struct.error, EOFError… — to the client they all mean the same thing.
        raise ValidationFailed(
            f"{field} is a damaged or truncated {_format_name(data)}image.",
            details={"field": field},
        ) from None
    return image_format, width, height


def _format_name(data: bytes) -> str:
    """Best-effort format name (with a trailing space) from the magic number, for messages."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG "
    if data.startswith(b"\xff\xd8"):
        return "JPEG "
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP "
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF "
    return ""
