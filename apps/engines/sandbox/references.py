"""Image references in the sandbox: their influence is visible in the picture.

``--sref`` (style): the grid takes on the reference's colours — a softened copy of it is mixed
into every quadrant. ``--cref``/``--oref`` (character, object): the reference appears in each
quadrant, as the subject Midjourney would keep. Image prompts (``image``) tint the grid a
little, as Midjourney's image weight does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from PIL import Image, ImageFilter, ImageOps

from apps.engines.base import StoredFile

#: How much of a style reference's softened picture is mixed into the grid.
STYLE_WEIGHT = 0.5
#: How much an image prompt tints the grid.
IMAGE_WEIGHT = 0.2
#: A character/object reference's side, as a share of a quadrant's shorter side.
SUBJECT_SHARE = 0.45


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def _mix(grid: Image.Image, reference: Image.Image, weight: float) -> Image.Image:
    softened = ImageOps.fit(reference, grid.size).filter(ImageFilter.GaussianBlur(12))
    return Image.blend(grid, softened, weight)


def _place_subject(grid: Image.Image, subject: Image.Image) -> Image.Image:
    width, height = grid.size
    half_w, half_h = width // 2, height // 2
    side = max(8, int(min(half_w, half_h) * SUBJECT_SHARE))
    thumb = ImageOps.contain(subject, (side, side))
    for left, top in ((0, 0), (half_w, 0), (0, half_h), (half_w, half_h)):
        x = left + (half_w - thumb.width) // 2
        y = top + (half_h - thumb.height) // 2
        grid.paste(thumb, (x, y))
    return grid


def apply_references(grid_png: bytes, references: Mapping[str, tuple[StoredFile, ...]]) -> bytes:
    """``grid_png`` with the influence of the prompt's reference images."""
    if not references:
        return grid_png
    grid = _open(grid_png)
    for stored in references.get("image", ())[:1]:
        grid = _mix(grid, _open(stored.read()), IMAGE_WEIGHT)
    for stored in references.get("sref", ())[:1]:
        grid = _mix(grid, _open(stored.read()), STYLE_WEIGHT)
    for kind in ("cref", "oref"):
        for stored in references.get(kind, ())[:1]:
            grid = _place_subject(grid, _open(stored.read()))
    return _png(grid)
