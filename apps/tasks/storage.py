"""Result and input files in our own storage (SPEC §4.4).

Files live under a random, unguessable folder per task (``results/<key>/…``) in Django's
default storage — local disk by default, S3-compatible through settings. URLs are stable and
need no authentication, because clients download them directly; knowing the key is the access.

A result's derived files (its thumbnail, and for a grid the four splits and their thumbnails)
are named when the result is stored but, on local storage, made afterwards (issue 15): the task
reaches SUCCESS as soon as the image itself is stored, a low-priority message on the results
queue makes the rest, and whoever needs one of them first (our ``/files/`` route, a download,
an engine reading a parent's split) makes it on the spot with :func:`derive_file`. So a URL
handed out never 404s, whichever comes first. Storage that serves its own URLs (S3) cannot ask
us for a missing file, so there every file is made before the task succeeds, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import struct
import tempfile
import zlib
from io import BytesIO
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# The WebP codec, registered up front: saving a format Pillow has not registered yet makes it
# import all of its ~40 format plugins (about 4 MiB in every worker process, issue 15, P6).
from PIL import (
    Image,
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from apps.tasks.imageinput import ACCEPTED_FORMATS

THUMB_SIDE = 256
#: A file name stem that is safe in a URL and a Content-Disposition header as it is.
_STEM_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_LOCAL_BACKEND = "django.core.files.storage.FileSystemStorage"

#: The formats a result may be in (Pillow's names; JPEG's opener also reports MPO files).
_RESULT_FORMATS = list(ACCEPTED_FORMATS)
#: What Pillow raises on a damaged or cut-off file, depending on the format and where it ends.
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ResultRefused(Exception):
    """The bytes given as a result are not an image we can keep: not an image in an accepted
    format, damaged or cut off, or with more pixels than ``RESULT_MAX_PIXELS``.

    Asking again brings the same bytes: the lifecycle fails the task with ``UPSTREAM_ERROR``
    and releases its hold (``lifecycle.task_succeed``), instead of counting a crash and
    retrying. Raised before anything is stored.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def result_max_pixels() -> int:
    """Pixels a result may have (``RESULT_MAX_PIXELS``): its thumbnail and splits decode the
    whole image, so a few-kilobyte PNG declaring 12000x12000 would cost ~432 MB on every decode.
    The default is an input's bound (``imageinput.DEFAULT_MAX_PIXELS``)."""
    return int(settings.RESULT_MAX_PIXELS)


def _new_key() -> str:
    return secrets.token_urlsafe(24)


def _save(name: str, data: bytes) -> str:
    return default_storage.save(name, ContentFile(data))


#: PNG compression for the splits we cut: level 1 encodes about four times faster than the
#: default 6 for files about a third larger, and the encode is most of a result's storing time;
#: zlib's run-length strategy (``Z_RLE``) takes the same time for about a quarter fewer bytes.
SPLIT_PNG_LEVEL = 1
SPLIT_PNG_STRATEGY = 3


def served_by_us() -> bool:
    """True when result files are served by our ``/files/`` route (local storage), which can
    make a derived file on its first request; S3-style storage serves its own URLs."""
    return bool(settings.STORAGES["default"]["BACKEND"] == _LOCAL_BACKEND)


def _ext(image: Image.Image) -> str:
    fmt = (image.format or "PNG").lower()
    return {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)


def _thumbnail(image: Image.Image) -> bytes:
    small = image.convert("RGB")  # a copy: the caller's image is left as it was
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    out = BytesIO()
    small.save(out, format="WEBP", quality=80)
    return out.getvalue()


def _quadrant(image: Image.Image, index: int) -> Image.Image:
    """Split ``index`` (1-4: U1 U2 / U3 U4) of a grid."""
    width, height = image.size
    half_w, half_h = width // 2, height // 2
    top, left = ((0, 0), (0, half_w), (half_h, 0), (half_h, half_w))[index - 1]
    return image.crop((left, top, left + half_w, top + half_h))


def _png(image: Image.Image) -> bytes:
    out = BytesIO()
    image.save(out, format="PNG", compress_level=SPLIT_PNG_LEVEL, compress_type=SPLIT_PNG_STRATEGY)
    return out.getvalue()


def _names(key: str, stem: str, ext: str, *, is_grid: bool) -> dict[str, Any]:
    split = "" if stem == "image" else f"{stem}-"
    thumb = "thumb" if stem == "image" else f"{stem}.thumb"
    grid = range(1, 5) if is_grid else range(0)
    return {
        "key": key,
        "image": f"results/{key}/{stem}.{ext}",
        "thumb": f"results/{key}/{thumb}.webp",
        "is_grid": is_grid,
        "splits": [f"results/{key}/{split}{index}.png" for index in grid],
        "split_thumbs": [f"results/{key}/{split}{index}.thumb.webp" for index in grid],
    }


def derived_names(result: dict[str, Any]) -> list[str]:
    """The names of ``result``'s derived files (thumbnail, splits, split thumbnails)."""
    return [
        name
        for name in (
            result.get("thumb"),
            *(result.get("splits") or []),
            *(result.get("split_thumbs") or []),
        )
        if name
    ]


def _derive(image: Image.Image, result: dict[str, Any], name: str) -> bytes | None:
    """The bytes of derived file ``name`` of ``result`` (whose image is ``image``), or None
    when ``name`` is not one of its derived files."""
    if name == result.get("thumb"):
        return _thumbnail(image)
    splits, thumbs = result.get("splits") or [], result.get("split_thumbs") or []
    if name in splits:
        return _png(_quadrant(image, splits.index(name) + 1))
    if name in thumbs:
        return _thumbnail(_quadrant(image, thumbs.index(name) + 1))
    return None


def _write_in_place(name: str, data: bytes) -> None:
    """Write ``name`` under exactly that name, atomically (local storage): two processes that
    make the same derived file at once both write the same bytes, and a reader never sees a
    partial file."""
    path = default_storage.path(name)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".derive-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, getattr(default_storage, "file_permissions_mode", None) or 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def derive_files(result: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """Make ``result``'s derived files that are missing (only ``names`` when given; names that
    are not its derived files are ignored), decoding the image once. Returns those made."""
    wanted = [
        name
        for name in (derived_names(result) if names is None else names)
        if name in derived_names(result) and not default_storage.exists(name)
    ]
    image_name = result.get("image")
    if not wanted or not image_name:
        return []
    with default_storage.open(image_name, "rb") as handle, Image.open(handle) as image:
        image.load()
        for name in wanted:
            data = _derive(image, result, name)
            if data is not None:
                _write_in_place(name, data)
    return wanted


def _check_result(data: bytes) -> None:
    """Raise ``ResultRefused`` unless ``data`` is a whole image of an accepted format within
    the pixel limit: whatever passes can always be thumbnailed and split later.

    The size is read from the header before any pixel is decoded. A PNG is then checked
    without decoding (``verify`` walks every chunk to the end and checks its CRC, so a file
    cut off anywhere fails); other formats are decoded once (a JPEG at an eighth of its size,
    which still walks all of its coded data).
    """
    limit = result_max_pixels()
    try:
        with Image.open(BytesIO(data), formats=_RESULT_FORMATS) as image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ResultRefused("The upstream's result is an image without pixels.")
            if width * height > limit:
                raise ResultRefused(
                    f"The upstream's result image is {width}x{height} pixels "
                    f"({width * height:,}); the maximum is {limit:,} pixels."
                )
            if image.format == "PNG":
                image.verify()
                return
        with Image.open(BytesIO(data), formats=_RESULT_FORMATS) as image:
            if image.format in ("JPEG", "MPO"):
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ResultRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard, in ``open`` above twice its limit (a warning below that, which
        # is an error only where warnings are made errors): before we see the size.
        raise ResultRefused(
            f"The upstream's result image has more than {limit:,} pixels, the maximum."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ResultRefused("The upstream's result is not a PNG, JPEG, WEBP or GIF image.") from exc
    except _DAMAGED as exc:
        raise ResultRefused("The upstream's result image is damaged or truncated.") from exc


def store_result(*, data: bytes, is_grid: bool, stem: str = "image") -> dict[str, Any]:
    """Store a result image; name (and, on S3-style storage, store) its derived files.

    ``stem`` names the files (the task's id, so a download is called ``<task id>.png`` and a
    split ``<task id>-1.png``); the random folder is what keeps them unguessable. The image is
    checked whole first (:func:`_check_result`): bytes that are not a sound image within
    ``RESULT_MAX_PIXELS`` raise ``ResultRefused`` and nothing is stored. On local storage the
    thumbnails and splits of a result named after its task are made later
    (:func:`derive_files`), otherwise the image is decoded once and each file encoded once.

    Returns the ``Task.result`` dict: names in storage, never URLs, so a change of domain or
    storage backend never rewrites rows.
    """
    _check_result(data)
    key = _new_key()
    if not _STEM_RE.fullmatch(stem):
        stem = "image"
    with Image.open(BytesIO(data), formats=_RESULT_FORMATS) as image:
        result = _names(key, stem, _ext(image), is_grid=is_grid)
        result["width"], result["height"] = image.size
        image_name = _save(result["image"], data)
        if image_name != result["image"]:  # a fresh random folder: never taken
            raise RuntimeError(f"result name {result['image']!r} was taken")
        # Made now where nobody could make them later: storage serving its own URLs, or a
        # result not named after its task (the ``/files/`` route finds the task by the stem).
        if not served_by_us() or stem == "image":
            image.load()
            for name in derived_names(result):
                derived = _derive(image, result, name)
                if derived is not None:
                    _save(name, derived)
    return result


def open_result_file(name: str, result: dict[str, Any]) -> IO[bytes]:
    """Open file ``name`` of ``result``, making it first if it is a derived file not made yet."""
    if name in derived_names(result) and not default_storage.exists(name):
        derive_files(result, [name])
    handle: IO[bytes] = default_storage.open(name, "rb")
    return handle


def result_file_parts(name: str) -> tuple[str, str] | None:
    """``(key, stem)`` of a derived file's name (``results/<key>/<stem>-1.png``,
    ``results/<key>/<stem>.thumb.webp`` …), None for any other name."""
    match = re.fullmatch(
        r"results/([0-9A-Za-z_-]{16,64})/([0-9A-Za-z_-]{1,64}?)(?:-[1-4])?(?:\.thumb)?\.(?:png|webp)",
        name,
    )
    return (match[1], match[2]) if match else None


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
    """Remove the files of a ``store_result`` whose task lost its race to finish (derived
    files made or not)."""
    names = [result.get("image"), *derived_names(result), *(result.get("videos") or [])]
    for name in names:
        if name:
            default_storage.delete(name)


def store_input(*, data: bytes, ext: str) -> str:
    return _save(f"inputs/{_new_key()}/input.{ext.lower()}", data)


def read_file(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        content: bytes = handle.read()
        return content


def read_result_file(name: str, result: dict[str, Any]) -> bytes:
    """``read_file`` for a file of ``result``, making a derived file first if need be."""
    with open_result_file(name, result) as handle:
        content: bytes = handle.read()
        return content


def file_url(name: str | None) -> str | None:
    """Public URL of a stored file: our own ``/files/`` route, or the storage's (S3) URL."""
    if not name:
        return None
    backend = settings.STORAGES["default"]["BACKEND"]
    if backend == _LOCAL_BACKEND:
        return f"{settings.PUBLIC_BASE_URL}/files/{name}"
    return str(default_storage.url(name))
