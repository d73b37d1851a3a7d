"""Remix in the sandbox: a variation, reroll or pan re-imagined with the changed prompt.

The result is the action's own picture mixed with pictures of the new prompt, tinted toward
the new prompt's colour words and captioned with it, so the change of prompt is visible.
"""

from __future__ import annotations

import io

from PIL import Image

from . import render

#: How much of the action's own picture stays in a remixed result.
KEEP_WEIGHT = 0.4
#: How strongly the new prompt's colour words tint the result.
TINT_WEIGHT = 0.3


def render_remix(image_png: bytes, prompt: str, seed: int) -> bytes:
    """``image_png`` (a variation or pan grid) remixed with ``prompt``."""
    with Image.open(io.BytesIO(image_png)) as image:
        size = image.size
    mixed = render.render_grid(prompt, seed, size, base=image_png, base_weight=KEEP_WEIGHT)
    colours = render.prompt_colours(prompt)
    if not colours:
        return mixed
    tint = tuple(sum(c[i] for c in colours) // len(colours) for i in range(3))
    with Image.open(io.BytesIO(mixed)) as picture:
        tinted = Image.blend(picture.convert("RGB"), Image.new("RGB", size, tint), TINT_WEIGHT)
    out = io.BytesIO()
    tinted.save(out, format="PNG", compress_level=3)
    return out.getvalue()
