"""Remix in the sandbox: a variation, reroll or pan re-imagined with the changed prompt.

The result is the action's own picture mixed with pictures of the new prompt (its colour
words win), captioned with the new prompt, so the change of prompt is visible.
"""

from __future__ import annotations

import io

from PIL import Image

from . import render

#: How much of the action's own picture stays in a remixed result.
KEEP_WEIGHT = 0.45


def render_remix(image_png: bytes, prompt: str, seed: int) -> bytes:
    """``image_png`` (a variation or pan grid) remixed with ``prompt``."""
    with Image.open(io.BytesIO(image_png)) as image:
        size = image.size
    return render.render_grid(prompt, seed, size, base=image_png, base_weight=KEEP_WEIGHT)
