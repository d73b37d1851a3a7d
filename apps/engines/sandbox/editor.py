"""The editor and retexture in the sandbox, for real.

Edit: the masked area is repainted from the prompt, and so is every transparent part of the
image (an enlarged canvas: outpainting); the rest stays pixel for pixel. Retexture: the
image's shapes and light are kept, its colours and surfaces replaced by the prompt's.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageOps

from . import render

#: Fill for the transparent canvas before it is repainted.
_CANVAS_GREY = (128, 128, 128)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def render_edit(image_png: bytes, mask_png: bytes, prompt: str, seed: int) -> bytes:
    """A 2x2 grid of the image repainted where the mask is white or the canvas is empty."""
    with Image.open(io.BytesIO(image_png)) as raw:
        image = raw.convert("RGBA")
    with Image.open(io.BytesIO(mask_png)) as raw_mask:
        mask_rgba = raw_mask.convert("RGBA")
    mask = Image.new("L", mask_rgba.size, 0)
    mask.paste(mask_rgba.convert("L"), mask=mask_rgba.getchannel("A"))
    mask = mask.resize(image.size, Image.Resampling.NEAREST)
    empty = image.getchannel("A").point(lambda v: 255 if v < 128 else 0)
    combined = ImageChops.lighter(mask, empty)
    canvas = Image.new("RGB", image.size, _CANVAS_GREY)
    canvas.paste(image.convert("RGB"), mask=image.getchannel("A"))
    return render.render_inpaint(_png(canvas), _png(combined), prompt, seed)


def render_retexture(image_png: bytes, prompt: str, seed: int) -> bytes:
    """A 2x2 grid: the image's light and shapes, recoloured with the prompt's colours."""
    with Image.open(io.BytesIO(image_png)) as raw:
        source = raw.convert("RGB")
    source = ImageOps.contain(source, (512, 512))
    light = ImageOps.autocontrast(ImageOps.grayscale(source))
    colours = render.prompt_colours(prompt)
    rng = random.Random(f"retexture:{prompt}:{seed}")
    quadrants = []
    for _ in range(4):
        base = colours[0] if colours else tuple(rng.randrange(40, 220) for _ in range(3))
        dark = tuple(max(0, c // 4 + rng.randrange(0, 20)) for c in base)
        bright = tuple(min(255, c + (255 - c) // 2 + rng.randrange(0, 20)) for c in base)
        quadrants.append(ImageOps.colorize(light, black=dark, white=bright, mid=base))
    width, height = source.size
    grid = Image.new("RGB", (width * 2, height * 2))
    for index, quadrant in enumerate(quadrants):
        grid.paste(quadrant, ((index % 2) * width, (index // 2) * height))
    return _png(grid)
