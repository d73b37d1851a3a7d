"""The fake Midjourney bot's pictures: small, deterministic PNGs drawn with Pillow.

A grid is four coloured quadrants (so a split really yields four different images); a single
image is one panel. Colours come from the prompt and the job hash, so two jobs differ.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw

PANEL = 128


def _colour(seed: str, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return digest[0], digest[1], digest[2]


def _panel(seed: str, index: int, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), _colour(seed, index))
    draw = ImageDraw.Draw(image)
    inner = _colour(seed, index + 10)
    margin = size // 4
    draw.ellipse((margin, margin, size - margin, size - margin), fill=inner)
    draw.text((4, 4), str(index + 1), fill=(255, 255, 255))
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(seed: str, *, progress: int = 100) -> bytes:
    """A 2×2 grid; below 100 % it is drawn blurred-looking (half size), as previews are."""
    size = PANEL if progress >= 100 else PANEL // 2
    grid = Image.new("RGB", (size * 2, size * 2))
    for index in range(4):
        grid.paste(_panel(seed, index, size), ((index % 2) * size, (index // 2) * size))
    return _png(grid)


def single_png(seed: str, index: int = 0) -> bytes:
    return _png(_panel(seed, index, PANEL * 2))
