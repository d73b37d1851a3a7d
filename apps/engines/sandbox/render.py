"""Real, deterministic images for the sandbox engine (SPEC §5).

The sandbox must behave like Midjourney closely enough that an integrator can build a whole
client against it: grids that split into four different pictures, upscales that are crops of
the grid, variations that resemble their parent, zooms and pans whose canvas really grows,
inpainting that only touches the mask. Nothing here is "AI"; it is Pillow primitives driven by
a hash of the inputs, so the same prompt and seed give byte-identical PNGs on every run (tests
and idempotent retries rely on that).

Speed matters because workers render on the request path of the sandbox engine: everything is
built from whole-image Pillow operations (gradients, resize, blend, composite, blur), never
per-pixel Python loops. A 1024 px grid takes a few tens of milliseconds.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import math
import random
import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

# The WebP codec, registered up front: saving a format Pillow has not registered yet makes it
# import all of its ~40 format plugins (about 4 MiB in every worker process, issue 15, P6).
from PIL import (
    Image,
    ImageDraw,
    ImageEnhance,
    ImageFilter,
    ImageFont,
    ImageOps,
    WebPImagePlugin,  # noqa: F401
)

__all__ = [
    "BLEND_DIMENSIONS",
    "GRID_LONG_SIDE",
    "describe_prompts",
    "grid_quadrant",
    "grid_size",
    "render_blend",
    "render_grid",
    "render_inpaint",
    "render_pan",
    "render_swap_face",
    "render_upscale",
    "render_variation",
    "render_zoom",
    "shorten_prompt",
    "split_grid",
    "thumbnail",
]

#: Long side of a rendered 2x2 grid; each quadrant's long side is half of it.
GRID_LONG_SIDE = 1024
_QUADRANT_LONG_SIDE = GRID_LONG_SIDE // 2
_MIN_QUADRANT_SIDE = 8
#: Upscales never exceed this long side, whatever factor is asked.
MAX_OUTPUT_SIDE = 4096
#: Inputs are reduced to this long side first: nothing rendered here needs more, and a
#: 40-megapixel upload would otherwise cost seconds per operation.
_MAX_INPUT_SIDE = 2048

BLEND_DIMENSIONS: dict[str, tuple[int, int]] = {
    "PORTRAIT": (2, 3),
    "SQUARE": (1, 1),
    "LANDSCAPE": (3, 2),
}

VariationStrength = Literal["subtle", "strong", "grid"]
PanDirection = Literal["left", "right", "up", "down"]

# How far a variation departs from its source: (pattern blend, max rotation °, max zoom-in).
_VARIATION_STRENGTH: dict[str, tuple[float, float, float]] = {
    "subtle": (0.10, 1.5, 0.03),
    "grid": (0.25, 4.0, 0.08),
    "strong": (0.42, 9.0, 0.16),
}

# Named colours used both to honour colour words in prompts and to name colours in
# describe_prompts, so an image rendered from "teal and orange" is described that way.
_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 57),
    "crimson": (170, 20, 45),
    "orange": (245, 133, 30),
    "amber": (255, 180, 40),
    "yellow": (246, 214, 58),
    "gold": (212, 170, 60),
    "olive": (120, 128, 40),
    "lime": (160, 210, 60),
    "green": (56, 160, 80),
    "emerald": (20, 130, 90),
    "teal": (20, 140, 140),
    "turquoise": (64, 210, 200),
    "cyan": (60, 200, 230),
    "blue": (40, 90, 210),
    "navy": (25, 35, 90),
    "indigo": (75, 50, 150),
    "purple": (128, 60, 175),
    "violet": (160, 110, 220),
    "lavender": (200, 180, 235),
    "magenta": (210, 50, 170),
    "pink": (240, 130, 175),
    "peach": (250, 190, 150),
    "beige": (225, 210, 180),
    "brown": (125, 80, 45),
    "maroon": (110, 25, 40),
    "black": (18, 18, 22),
    "charcoal": (55, 58, 64),
    "gray": (128, 128, 132),
    "silver": (192, 194, 200),
    "white": (244, 244, 240),
}
_COLOUR_SYNONYMS = {"grey": "gray", "golden": "gold", "aqua": "cyan", "rose": "pink"}


# --- plumbing --------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    """A PRNG seeded from a stable hash of ``parts`` (``hash()`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(repr(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1 encodes these images ~3.5x faster than the default 6 (level 3: ~1.6x) for
    # ~35% more bytes; encoding was most of a render's time. Run-length matching (zlib's Z_RLE,
    # ``compress_type=3``) takes the same time for a quarter fewer bytes on these pictures.
    image.save(buffer, format="PNG", compress_level=1, compress_type=3)
    return buffer.getvalue()


def _open(data: bytes, *, max_side: int = _MAX_INPUT_SIDE) -> Image.Image:
    """Decode to RGB, flattening transparency onto white and capping the long side."""
    with Image.open(io.BytesIO(data)) as source:
        source.draft("RGB", (max_side, max_side))
        image = source.convert("RGBA") if _has_alpha(source) else source.convert("RGB")
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _fit_size(aspect: tuple[int, int], long_side: int) -> tuple[int, int]:
    width, height = aspect
    if width <= 0 or height <= 0:
        raise ValueError(f"aspect ratio must be positive, got {width}:{height}")
    if width >= height:
        return long_side, max(_MIN_QUADRANT_SIDE, round(long_side * height / width))
    return max(_MIN_QUADRANT_SIDE, round(long_side * width / height)), long_side


def grid_size(aspect: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Pixel size of a grid for ``aspect`` (``(16, 9)`` → ``(1024, 576)``)."""
    quadrant_w, quadrant_h = _fit_size(aspect, _QUADRANT_LONG_SIDE)
    return quadrant_w * 2, quadrant_h * 2


def _quadrant_boxes(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    # Midjourney numbers grid images left-to-right, top-to-bottom: U1 U2 / U3 U4.
    width, height = size
    half_w, half_h = width // 2, height // 2
    return [
        (0, 0, half_w, half_h),
        (half_w, 0, width, half_h),
        (0, half_h, half_w, height),
        (half_w, half_h, width, height),
    ]


def _assemble(quadrants: Sequence[Image.Image]) -> Image.Image:
    quadrant_w, quadrant_h = quadrants[0].size
    grid = Image.new("RGB", (quadrant_w * 2, quadrant_h * 2))
    for quadrant, box in zip(quadrants, _quadrant_boxes(grid.size), strict=True):
        grid.paste(quadrant, box[:2])
    return grid


def _fit_long_side(image: Image.Image, long_side: int) -> Image.Image:
    size = _fit_size(image.size, long_side)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


# --- painting --------------------------------------------------------------------------------


def _prompt_colours(prompt: str) -> list[tuple[int, int, int]]:
    colours: list[tuple[int, int, int]] = []
    for word in re.findall(r"[a-z]+", prompt.lower()):
        name = _COLOUR_SYNONYMS.get(word, word)
        if name in _COLOURS and _COLOURS[name] not in colours:
            colours.append(_COLOURS[name])
    return colours


def prompt_colours(prompt: str) -> list[tuple[int, int, int]]:
    """The RGB colours a prompt names ("a deep blue ocean" → blue), in order."""
    return _prompt_colours(prompt)


def _palette(
    rng: random.Random, preferred: Sequence[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Four colours: the preferred ones first (jittered), the rest from the hash."""
    palette = [
        tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in colour)
        for colour in preferred[:3]
    ]
    while len(palette) < 4:
        hue, saturation, value = rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.35, 1.0)
        palette.append(_hsv(hue, saturation, value))
    rng.shuffle(palette)
    return [(c[0], c[1], c[2]) for c in palette]


def _hsv(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


#: Gradients and blurred shapes hold no detail finer than this many pixels, so they are made at
#: 1/_SOFT_SCALE of the picture's size and enlarged (issue 15: the same pictures for about half
#: the CPU of making them at full size).
_SOFT_SCALE = 4


def _gradient(size: tuple[int, int], angle: float, radial: bool) -> Image.Image:
    width, height = size
    if radial:
        return Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)
    # Rotate an oversized gradient so its corners never show the rotation's black fill; at a
    # fraction of the size (a gradient is smooth), then enlarged to the picture.
    small = (max(1, width // _SOFT_SCALE), max(1, height // _SOFT_SCALE))
    side = math.ceil(math.hypot(*small)) + 2
    gradient = Image.linear_gradient("L").resize((side, side), Image.Resampling.BILINEAR)
    gradient = gradient.rotate(angle, resample=Image.Resampling.BILINEAR)
    left, top = (side - small[0]) / 2, (side - small[1]) / 2
    return gradient.resize(
        size, Image.Resampling.BILINEAR, box=(left, top, left + small[0], top + small[1])
    )


def _paint(
    size: tuple[int, int], rng: random.Random, preferred: Sequence[tuple[int, int, int]]
) -> Image.Image:
    """One abstract picture: a coloured gradient, soft blurred shapes, then crisp shapes."""
    width, height = size
    palette = _palette(rng, preferred)
    gradient = _gradient(size, rng.uniform(0, 360), radial=rng.random() < 0.3)
    image = ImageOps.colorize(gradient, black=palette[0], white=palette[1], mid=palette[2])

    short = min(width, height)
    # The soft shapes are drawn and blurred at a fraction of the size (blurred, they have no
    # fine detail to lose), then enlarged.
    scale = _SOFT_SCALE if short >= 16 * _SOFT_SCALE else 1
    soft_size = (max(1, round(width / scale)), max(1, round(height / scale)))
    soft = Image.new("RGBA", soft_size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(soft)
    for _ in range(rng.randint(3, 6)):
        radius = rng.uniform(0.15, 0.45) * short
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        squash = rng.uniform(0.6, 1.4)
        colour = rng.choice(palette)
        draw.ellipse(
            (
                (cx - radius) / scale,
                (cy - radius * squash) / scale,
                (cx + radius) / scale,
                (cy + radius * squash) / scale,
            ),
            fill=(*colour, rng.randint(90, 190)),
        )
    soft = soft.filter(ImageFilter.GaussianBlur(max(1.0, short / 28) / scale))
    if soft.size != size:
        soft = soft.resize(size, Image.Resampling.BILINEAR)
    image = Image.alpha_composite(image.convert("RGBA"), soft)

    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 5)):
        fill = (*rng.choice(palette), rng.randint(150, 235))
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        extent = rng.uniform(0.06, 0.22) * short
        kind = rng.randrange(4)
        if kind == 0:
            draw.ellipse((cx - extent, cy - extent, cx + extent, cy + extent), fill=fill)
        elif kind == 1:
            draw.rectangle(
                (cx - extent, cy - extent * 0.6, cx + extent, cy + extent * 0.6), fill=fill
            )
        elif kind == 2:
            draw.regular_polygon(
                (cx, cy, extent), rng.randint(3, 7), rotation=rng.uniform(0, 360), fill=fill
            )
        else:
            draw.line(
                (cx - extent * 2, cy + extent, cx + extent * 2, cy - extent),
                fill=fill,
                width=max(1, int(extent / 5)),
            )
    return image.convert("RGB")


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _caption_text(text: str) -> str:
    # The bundled font covers ASCII; accents are folded, other scripts shown as "?".
    folded = unicodedata.normalize("NFKD", " ".join(text.split()))
    return (
        "".join(c for c in folded if not unicodedata.combining(c))
        .encode("ascii", "replace")
        .decode()
    )


def caption_label(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: int) -> str:
    """``text`` as it fits in ``limit`` pixels, cut with "..." when it does not.

    Bounded whatever the prompt's length (issue 19: trimming one character at a time and
    measuring the rest each time grew quadratically, 35 s for 2,000 characters): no glyph is
    narrower than a pixel, so only the first ``limit`` characters can ever show, and the cut is
    found by bisection, about a dozen measurements of at most ``limit`` characters.
    """
    # Fold only what can show (with room for NFKD's decompositions and dropped marks).
    label = _caption_text(text[: 4 * limit + 4])
    if font.getlength(label[: limit + 1]) <= limit and len(label) <= limit:
        return label
    label = label[:limit]
    low, high = 0, len(label)  # the longest prefix that fits with "..." is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(label[:middle] + "...") <= limit:
            low = middle
        else:
            high = middle - 1
    return label[:low].rstrip() + "..."


def _caption(image: Image.Image, text: str) -> None:
    """Write ``text`` small on a translucent strip along the bottom edge."""
    width, height = image.size
    font_size = max(9, min(14, height // 24))
    if height < font_size * 3:
        return
    font = _font(font_size)
    label = caption_label(text, font, width - 8)
    strip = font_size + 6
    overlay = Image.new("RGBA", (width, strip), (0, 0, 0, 120))
    ImageDraw.Draw(overlay).text((4, 2), label, font=font, fill=(255, 255, 255, 235))
    image.paste(overlay, (0, height - strip), overlay)


# --- grids -----------------------------------------------------------------------------------


def render_grid(
    prompt: str,
    seed: int,
    aspect: tuple[int, int] = (1, 1),
    *,
    base: bytes | None = None,
    base_weight: float = 0.6,
) -> bytes:
    """A 2x2 grid PNG for ``prompt`` and ``seed`` (IMAGINE, REROLL).

    The grid follows ``aspect`` with a long side of ``GRID_LONG_SIDE``; each quadrant is a
    distinct picture whose colours honour colour words in the prompt. With ``base`` (a parent
    grid) the new pictures are mixed into it at ``1 - base_weight``, so the result is visibly a
    perturbation of the parent.
    """
    quadrant_size = _fit_size(aspect, _QUADRANT_LONG_SIDE)
    preferred = _prompt_colours(prompt)
    quadrants = [_paint(quadrant_size, _rng("grid", prompt, seed, n), preferred) for n in range(4)]
    grid = _assemble(quadrants)
    if base is not None:
        parent = _open(base)
        if parent.size != grid.size:
            parent = ImageOps.fit(parent, grid.size, Image.Resampling.LANCZOS)
        grid = Image.blend(grid, parent, max(0.0, min(1.0, base_weight)))
    for number, box in enumerate(_quadrant_boxes(grid.size), start=1):
        quadrant = grid.crop(box)
        _caption(quadrant, f"{number} | {prompt}")
        grid.paste(quadrant, box[:2])
    return _png(grid)


def split_grid(png: bytes) -> list[bytes]:
    """The four quadrant PNGs of a grid, in U1-U4 order."""
    grid = _open(png, max_side=MAX_OUTPUT_SIDE)
    return [_png(grid.crop(box)) for box in _quadrant_boxes(grid.size)]


def grid_quadrant(png: bytes, index: int) -> bytes:
    """Quadrant ``index`` (1-4) of a grid as a PNG: ``split_grid(png)[index - 1]``, encoding
    only that one."""
    if not 1 <= index <= 4:
        raise ValueError(f"grid index must be 1-4, got {index}")
    grid = _open(png, max_side=MAX_OUTPUT_SIDE)
    return _png(grid.crop(_quadrant_boxes(grid.size)[index - 1]))


def thumbnail(png: bytes, max_side: int = 256, *, image_format: str = "WEBP") -> bytes:
    """A small preview (``WEBP`` by default, or ``PNG``) whose long side is ``max_side``."""
    if image_format not in ("WEBP", "PNG"):
        raise ValueError(f"thumbnail format must be WEBP or PNG, got {image_format!r}")
    image = _open(png, max_side=max(max_side * 4, 256))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "WEBP":
        image.save(buffer, format="WEBP", quality=80, method=4)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_upscale(
    source_png: bytes, index: int | None, *, factor: float = 2, creative: bool = False
) -> bytes:
    """Quadrant ``index`` (1-4) of a grid, or the whole image if ``None``, enlarged ``factor``x.

    ``creative`` adds contrast and crisper edges, like Midjourney's "Upscale (Creative)".
    """
    if not 1 <= factor <= 4:
        raise ValueError(f"upscale factor must be between 1 and 4, got {factor}")
    image = _open(source_png, max_side=MAX_OUTPUT_SIDE)
    if index is not None:
        if not 1 <= index <= 4:
            raise ValueError(f"grid index must be 1-4, got {index}")
        image = image.crop(_quadrant_boxes(image.size)[index - 1])
    width, height = image.size
    scale = min(factor, MAX_OUTPUT_SIDE / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(target, Image.Resampling.LANCZOS)
    image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=60, threshold=2))
    if creative:
        image = ImageEnhance.Contrast(image).enhance(1.12)
        image = image.filter(ImageFilter.EDGE_ENHANCE)
    return _png(image)


def _dominant_colours(image: Image.Image, count: int = 4) -> list[tuple[int, int, int]]:
    small = image.copy()
    small.thumbnail((64, 64))
    quantized = small.quantize(colors=count)
    palette = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], key=lambda item: (-item[0], item[1]))
    colours: list[tuple[int, int, int]] = []
    for _, index in counts:
        assert isinstance(index, int)
        red, green, blue = palette[index * 3 : index * 3 + 3]
        colours.append((red, green, blue))
    return colours


def _perturb(
    image: Image.Image, rng: random.Random, strength: str, preferred: Sequence[tuple[int, int, int]]
) -> Image.Image:
    blend, max_rotation, max_zoom = _VARIATION_STRENGTH[strength]
    width, height = image.size
    zoom = 1 + rng.uniform(0, max_zoom)
    crop_w, crop_h = width / zoom, height / zoom
    left = rng.uniform(0, width - crop_w)
    top = rng.uniform(0, height - crop_h)
    result = image.resize(
        image.size, Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h)
    )
    result = result.rotate(
        rng.uniform(-max_rotation, max_rotation),
        resample=Image.Resampling.BICUBIC,
        fillcolor=preferred[0] if preferred else None,
    )
    if strength == "strong" and rng.random() < 0.5:
        result = ImageOps.mirror(result)
    spread = 0.15 + blend
    result = ImageEnhance.Color(result).enhance(rng.uniform(1 - spread, 1 + spread))
    result = ImageEnhance.Brightness(result).enhance(rng.uniform(1 - spread / 3, 1 + spread / 3))
    return Image.blend(result, _paint(image.size, rng, preferred), blend)


def render_variation(source_png: bytes, seed: int, strength: VariationStrength = "grid") -> bytes:
    """A 2x2 grid of four perturbed versions of one image (V1-V4, Vary Subtle/Strong).

    ``strength``: ``subtle`` (Vary Subtle), ``grid`` (V buttons), ``strong`` (Vary Strong).
    """
    if strength not in _VARIATION_STRENGTH:
        raise ValueError(f"variation strength must be subtle, grid or strong, got {strength!r}")
    source = _fit_long_side(_open(source_png), _QUADRANT_LONG_SIDE)
    preferred = _dominant_colours(source, 3)
    quadrants = [
        _perturb(source, _rng("variation", seed, strength, n), strength, preferred)
        for n in range(4)
    ]
    return _png(_assemble(quadrants))


def _outpaint_fill(source: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Plausible surroundings for ``source``: itself stretched, blurred and repainted a little."""
    backdrop = ImageOps.fit(source, size, Image.Resampling.BILINEAR)
    backdrop = backdrop.filter(ImageFilter.GaussianBlur(max(2.0, min(size) / 14)))
    return Image.blend(backdrop, _paint(size, rng, _dominant_colours(source, 3)), 0.3)


def render_zoom(
    source_png: bytes,
    factor: float,
    *,
    seed: int = 0,
    aspect: tuple[int, int] | None = None,
) -> bytes:
    """Zoom out: ``source`` shrunk by ``factor`` (1-2) in the centre of a repainted canvas.

    Returns a 2x2 grid of four different surroundings. ``aspect`` changes the canvas shape
    (Custom Zoom with ``--ar``); by default it keeps the source's.
    """
    if not 1 <= factor <= 2:
        raise ValueError(f"zoom factor must be between 1 and 2, got {factor}")
    source = _open(source_png)
    canvas_size = _fit_size(aspect or source.size, _QUADRANT_LONG_SIDE)
    # The source occupies 1/factor of the canvas along the dimension that limits it.
    scale = min(canvas_size[0] / source.width, canvas_size[1] / source.height) / factor
    inner_size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    inner = source.resize(inner_size, Image.Resampling.LANCZOS)
    offset = ((canvas_size[0] - inner_size[0]) // 2, (canvas_size[1] - inner_size[1]) // 2)
    quadrants = []
    for n in range(4):
        canvas = _outpaint_fill(source, canvas_size, _rng("zoom", seed, factor, n))
        canvas.paste(inner, offset)
        quadrants.append(canvas)
    return _png(_assemble(quadrants))


def render_pan(source_png: bytes, direction: PanDirection, *, seed: int = 0) -> bytes:
    """Pan: the canvas grows by half in ``direction``; the new strip continues the edge.

    Returns a 2x2 grid whose quadrants have the extended aspect ratio.
    """
    if direction not in ("left", "right", "up", "down"):
        raise ValueError(f"pan direction must be left, right, up or down, got {direction!r}")
    source = _open(source_png)
    horizontal = direction in ("left", "right")
    width, height = source.size
    extended = (width + width // 2, height) if horizontal else (width, height + height // 2)
    canvas_size = _fit_size(extended, _QUADRANT_LONG_SIDE)
    scale = canvas_size[0] / extended[0] if horizontal else canvas_size[1] / extended[1]
    inner_size = (
        (canvas_size[0] - round(width // 2 * scale), canvas_size[1])
        if horizontal
        else (canvas_size[0], canvas_size[1] - round(height // 2 * scale))
    )
    inner = source.resize(inner_size, Image.Resampling.LANCZOS)
    position = {
        "left": (canvas_size[0] - inner_size[0], 0),
        "right": (0, 0),
        "up": (0, canvas_size[1] - inner_size[1]),
        "down": (0, 0),
    }[direction]
    # The mirror image of the source continues its edge seamlessly into the new strip.
    mirrored = ImageOps.mirror(inner) if horizontal else ImageOps.flip(inner)
    quadrants = []
    for n in range(4):
        canvas = _outpaint_fill(source, canvas_size, _rng("pan", seed, direction, n))
        echo = mirrored.filter(ImageFilter.GaussianBlur(3 + n))
        anchor = {
            "left": (position[0] - inner_size[0], 0),
            "right": (inner_size[0], 0),
            "up": (0, position[1] - inner_size[1]),
            "down": (0, inner_size[1]),
        }[direction]
        canvas = Image.blend(canvas, _paste_copy(canvas, echo, anchor), 0.55)
        canvas.paste(inner, position)
        quadrants.append(canvas)
    return _png(_assemble(quadrants))


def _paste_copy(canvas: Image.Image, image: Image.Image, position: tuple[int, int]) -> Image.Image:
    copy = canvas.copy()
    copy.paste(image, position)
    return copy


def render_inpaint(source_png: bytes, mask_png: bytes, prompt: str, seed: int) -> bytes:
    """Vary (Region): a 2x2 grid of ``source`` repainted only where ``mask`` is white.

    Each quadrant is the source at quadrant size (a source already 512 px on its long side is
    used pixel for pixel); mask pixels ≥ 128 are repainted, the rest are left untouched.
    Transparent mask pixels count as black.
    """
    source = _fit_long_side(_open(source_png), _QUADRANT_LONG_SIDE)
    with Image.open(io.BytesIO(mask_png)) as raw_mask:
        mask_rgba = raw_mask.convert("RGBA")
    mask = Image.new("L", mask_rgba.size, 0)
    mask.paste(mask_rgba.convert("L"), mask=mask_rgba.getchannel("A"))
    mask = mask.resize(source.size, Image.Resampling.NEAREST).point(
        lambda v: 255 if v >= 128 else 0
    )
    preferred = _prompt_colours(prompt) or _dominant_colours(source, 3)
    quadrants = []
    for n in range(4):
        painted = _paint(source.size, _rng("inpaint", prompt, seed, n), preferred)
        quadrants.append(Image.composite(painted, source, mask))
    return _png(_assemble(quadrants))


def render_blend(images: Sequence[bytes], dimensions: str = "SQUARE", seed: int = 0) -> bytes:
    """A 2x2 grid mixing 2-5 images, each quadrant with its own spatial weighting.

    ``dimensions``: ``PORTRAIT`` (2:3), ``SQUARE`` (1:1) or ``LANDSCAPE`` (3:2).
    """
    if not 2 <= len(images) <= 5:
        raise ValueError(f"blend needs 2 to 5 images, got {len(images)}")
    aspect = BLEND_DIMENSIONS.get(dimensions.upper())
    if aspect is None:
        raise ValueError(
            f"blend dimensions must be PORTRAIT, SQUARE or LANDSCAPE, got {dimensions!r}"
        )
    size = _fit_size(aspect, _QUADRANT_LONG_SIDE)
    fitted = [ImageOps.fit(_open(data), size, Image.Resampling.LANCZOS) for data in images]
    quadrants = []
    for n in range(4):
        rng = _rng("blend", seed, len(images), n)
        order = fitted[n % len(fitted) :] + fitted[: n % len(fitted)]
        mixed = order[0]
        for position, image in enumerate(order[1:], start=2):
            # A gradient mask whose mean is 1/position keeps a running average, but spread
            # unevenly across the picture so each quadrant is a different mix.
            weight = 2 / position
            mask = _gradient(size, rng.uniform(0, 360), radial=rng.random() < 0.3)
            mask = mask.point(lambda v, w=weight: min(255, int(v * w)))
            mixed = Image.composite(image, mixed, mask)
        quadrants.append(mixed)
    return _png(_assemble(quadrants))


def render_swap_face(source_png: bytes, target_png: bytes) -> bytes:
    """The centre of ``source`` pasted as a soft-edged ellipse over the centre of ``target``."""
    target = _open(target_png)
    if max(target.size) > GRID_LONG_SIDE:
        target.thumbnail((GRID_LONG_SIDE, GRID_LONG_SIDE), Image.Resampling.LANCZOS)
    width, height = target.size
    box_w, box_h = max(2, round(width * 0.36)), max(2, round(height * 0.46))
    left, top = (width - box_w) // 2, max(0, round(height * 0.42) - box_h // 2)
    face = ImageOps.fit(
        _open(source_png), (box_w, box_h), Image.Resampling.LANCZOS, centering=(0.5, 0.4)
    )
    mask = Image.new("L", (box_w, box_h), 0)
    inset = max(1, min(box_w, box_h) // 14)
    ImageDraw.Draw(mask).ellipse((inset, inset, box_w - inset, box_h - inset), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(inset / 1.5))
    result = target.copy()
    result.paste(face, (left, top), mask)
    return _png(result)


# --- describe and shorten --------------------------------------------------------------------


def _nearest_colour_name(colour: tuple[int, int, int]) -> str:
    # Weighted RGB distance ("redmean"): cheap and close enough to perception for naming.
    def distance(name: str) -> float:
        other = _COLOURS[name]
        mean_red = (colour[0] + other[0]) / 2
        dr, dg, db = (colour[0] - other[0], colour[1] - other[1], colour[2] - other[2])
        return (2 + mean_red / 256) * dr * dr + 4 * dg * dg + (2 + (255 - mean_red) / 256) * db * db

    return min(_COLOURS, key=distance)


def _ratio_text(width: int, height: int) -> str:
    ratio = Fraction(width, height).limit_denominator(16)
    return f"{ratio.numerator}:{ratio.denominator}"


def describe_prompts(image_bytes: bytes) -> list[str]:
    """Four plausible prompts for an image, from its colours, tone, detail and shape (DESCRIBE)."""
    with Image.open(io.BytesIO(image_bytes)) as original:
        width, height = original.size
    image = _open(image_bytes, max_side=256)
    names: list[str] = []
    for colour in _dominant_colours(image, 5):
        name = _nearest_colour_name(colour)
        if name not in names:
            names.append(name)
    grey = image.convert("L")
    brightness = sum(i * v for i, v in enumerate(grey.histogram())) / (grey.width * grey.height)
    for filler in (
        ("white", "charcoal", "silver") if brightness > 128 else ("black", "silver", "white")
    ):
        if len(names) >= 3:
            break
        if filler not in names:
            names.append(filler)
    first, second, third = names[:3]

    saturation_band = image.convert("HSV").getchannel("S")
    saturation = sum(i * v for i, v in enumerate(saturation_band.histogram())) / (
        image.width * image.height
    )
    edges = image.convert("L").filter(ImageFilter.FIND_EDGES)
    detail = sum(i * v for i, v in enumerate(edges.histogram())) / (image.width * image.height)

    if brightness < 70:
        mood = "dark, moody"
    elif saturation > 140:
        mood = "vivid"
    elif saturation < 60 and brightness > 170:
        mood = "pastel"
    elif saturation < 60:
        mood = "muted"
    else:
        mood = "warm" if _COLOURS[first][0] > _COLOURS[first][2] else "cool"
    texture = "intricate, highly detailed" if detail > 24 else "minimalist, clean"
    shape = "portrait" if height > width else "landscape" if width > height else "square"
    ratio = _ratio_text(width, height)
    suffix = f"--ar {ratio}"
    return [
        f"a {mood} {first} and {second} abstract composition, {ratio} {suffix}",
        f"{texture} digital artwork in shades of {first}, {second} and {third}, "
        f"soft studio lighting {suffix}",
        f"{first} background with floating {second} geometric shapes, "
        f"{'bokeh, dreamy atmosphere' if detail <= 24 else 'sharp focus, layered depth'} {suffix}",
        f"an abstract {shape} poster, {first} tones with {third} accents, "
        f"{'smooth gradients' if detail <= 24 else 'rich textures'}, modern graphic design {suffix}",
    ]


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "by",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "into",
        "onto",
        "over",
        "under",
        "very",
        "some",
        "any",
        "each",
        "his",
        "her",
        "their",
        "our",
        "your",
        "my",
        "which",
        "who",
        "whom",
        "whose",
        "while",
        "where",
        "when",
        "than",
        "then",
        "so",
        "such",
    ]
)
_SHORTEN_RATIOS = (0.8, 0.6, 0.45, 0.3, 0.15)


def _split_parameters(prompt: str) -> tuple[str, str]:
    match = re.search(r"(?:^|\s)(?:--|\u2014)(?=[A-Za-z])", prompt)
    if match is None:
        return prompt.strip(), ""
    return prompt[: match.start()].strip(), prompt[match.start() :].strip()


def shorten_prompt(prompt: str) -> tuple[str, list[str]]:
    """Token importance analysis and five progressively shorter prompts (SHORTEN).

    Parameters (``--ar 16:9`` …) are kept on every shortened prompt, as Midjourney does.
    Returns ``(analysis, options)``; the analysis marks important tokens in **bold** and
    dropped filler in ~~strikethrough~~, then lists each token's score.
    """
    text, parameters = _split_parameters(" ".join(prompt.split()))
    words = re.findall(r"[^\s,;.:!?()\[\]{}]+", text)
    if not words:
        raise ValueError("shorten needs a prompt with words")

    scores: list[float] = []
    for position, word in enumerate(words):
        key = word.lower().strip("'\"")
        if key in _STOPWORDS:
            scores.append(0.0)
            continue
        weight = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:2], "big") / 65535
        earliness = 1 - 0.5 * position / len(words)
        length = min(1.0, 0.5 + len(key) / 12)
        scores.append((0.35 + 0.65 * weight) * earliness * length)
    top = max(scores) or 1.0
    scores = [round(score / top, 2) for score in scores]

    content = [i for i, score in enumerate(scores) if score > 0] or list(range(len(words)))
    ranked = sorted(content, key=lambda i: (-scores[i], i))
    options: list[str] = []
    previous = len(content) + 1
    for ratio in _SHORTEN_RATIOS:
        count = max(1, math.ceil(len(content) * ratio))
        # Strictly shorter than the previous option whenever there is room to shrink.
        count = min(count, max(1, previous - 1))
        previous = count
        kept = sorted(ranked[:count])
        option = " ".join(words[i] for i in kept)
        options.append(f"{option} {parameters}".strip())

    marked = []
    for word, score in zip(words, scores, strict=True):
        if score >= 0.6:
            marked.append(f"**{word}**")
        elif score == 0:
            marked.append(f"~~{word}~~")
        else:
            marked.append(word)
    ranking = ", ".join(f"{words[i]} {scores[i]:.2f}" for i in ranked)
    analysis = f"IMPORTANT TOKENS\n{' '.join(marked)}\n\nTOKEN SCORES\n{ranking}"
    return analysis, options
