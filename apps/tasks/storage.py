"""Result and input files in our own storage (SPEC §4.4).

Files live under a random, unguessable folder per task (``results/<key>/…``) in Django's
default storage — local disk by default, S3-compatible through settings. URLs are stable and
need no authentication, because clients download them directly; knowing the key is the access.
"""

from __future__ import annotations

import re
import secrets
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

THUMB_SIDE = 256
#: A file name stem that is safe in a URL and a Content-Disposition header as it is.
_STEM_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _new_key() -> str:
    return secrets.token_urlsafe(24)


def _save(name: str, data: bytes) -> str:
    return default_storage.save(name, ContentFile(data))


#: PNG compression for the splits we cut: level 1 encodes about four times faster than the
#: default 6 for files about a third larger, and the encode is most of a result's storing time.
SPLIT_PNG_LEVEL = 1


def _ext(image: Image.Image) -> str:
    fmt = (image.format or "PNG").lower()
    return {"jpeg": "jpg"}.get(fmt, fmt)


def _thumbnail(image: Image.Image) -> bytes:
    small = image.convert("RGB")  # a copy: the caller's image is left as it was
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    out = BytesIO()
    small.save(out, format="WEBP", quality=80)
    return out.getvalue()


def _split(image: Image.Image) -> list[Image.Image]:
    width, height = image.size
    half_w, half_h = width // 2, height // 2
    return [
        image.crop((left, top, left + half_w, top + half_h))
        for top, left in ((0, 0), (0, half_w), (half_h, 0), (half_h, half_w))
    ]


def _png(image: Image.Image) -> bytes:
    out = BytesIO()
    image.save(out, format="PNG", compress_level=SPLIT_PNG_LEVEL)
    return out.getvalue()


def store_result(*, data: bytes, is_grid: bool, stem: str = "image") -> dict[str, Any]:
    """Store a result image (and, for grids, its four splits) with thumbnails.

    ``stem`` names the files (the task's id, so a download is called ``<task id>.png`` and a
    split ``<task id>-1.png``); the random folder is what keeps them unguessable. The image is
    decoded once and each derived file encoded once.

    Returns the ``Task.result`` dict: names in storage, never URLs, so a change of domain or
    storage backend never rewrites rows.
    """
    key = _new_key()
    if not _STEM_RE.fullmatch(stem):
        stem = "image"
    split = "" if stem == "image" else f"{stem}-"
    thumb = "thumb" if stem == "image" else f"{stem}.thumb"
    with Image.open(BytesIO(data)) as image:
        image.load()
        result: dict[str, Any] = {
            "key": key,
            "image": _save(f"results/{key}/{stem}.{_ext(image)}", data),
            "thumb": _save(f"results/{key}/{thumb}.webp", _thumbnail(image)),
            "is_grid": is_grid,
            "splits": [],
            "split_thumbs": [],
        }
        if is_grid:
            for index, part in enumerate(_split(image), start=1):
                result["splits"].append(_save(f"results/{key}/{split}{index}.png", _png(part)))
                result["split_thumbs"].append(
                    _save(f"results/{key}/{split}{index}.thumb.webp", _thumbnail(part))
                )
        result["width"], result["height"] = image.size
    return result


def store_videos(*, result: dict[str, Any], clips: list[bytes], stem: str = "video") -> None:
    """Store a video task's MP4 clips next to its poster (``result`` from ``store_result``).

    Named ``<stem>-1.mp4`` …, listed in ``result["videos"]`` in batch order.
    """
    if not _STEM_RE.fullmatch(stem):
        stem = "video"
    key = result.get("key") or _new_key()
    result["key"] = key
    result["videos"] = [
        _save(f"results/{key}/{stem}-{index}.mp4", clip) for index, clip in enumerate(clips, 1)
    ]


def delete_result(result: dict[str, Any]) -> None:
    """Remove the files of a ``store_result`` whose task lost its race to finish."""
    names = [
        result.get("image"),
        result.get("thumb"),
        *(result.get("splits") or []),
        *(result.get("split_thumbs") or []),
        *(result.get("videos") or []),
    ]
    for name in names:
        if name:
            default_storage.delete(name)


def store_input(*, data: bytes, ext: str) -> str:
    return _save(f"inputs/{_new_key()}/input.{ext.lower()}", data)


def read_file(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        content: bytes = handle.read()
        return content


def file_url(name: str | None) -> str | None:
    """Public URL of a stored file: our own ``/files/`` route, or the storage's (S3) URL."""
    if not name:
        return None
    backend = settings.STORAGES["default"]["BACKEND"]
    if backend == "django.core.files.storage.FileSystemStorage":
        return f"{settings.PUBLIC_BASE_URL}/files/{name}"
    return str(default_storage.url(name))
