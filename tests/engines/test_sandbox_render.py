"""The sandbox engine's Pillow renderer: real, deterministic images (SPEC §5)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from apps.engines.sandbox.render import (
    describe_prompts,
    grid_quadrant,
    grid_size,
    render_blend,
    render_grid,
    render_inpaint,
    render_pan,
    render_swap_face,
    render_upscale,
    render_variation,
    render_zoom,
    shorten_prompt,
    split_grid,
    thumbnail,
)

PROMPT = "a vivid teal and orange fox in a misty forest"


def load(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_size(data: bytes) -> tuple[int, int]:
    image = load(data)
    assert image.format == "PNG"
    return image.size


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255, after bringing ``b`` to ``a``'s size."""
    if a.size != b.size:
        b = b.resize(a.size, Image.Resampling.BILINEAR)
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def square_grid() -> bytes:
    return render_grid(PROMPT, 42)


@pytest.fixture(scope="module")
def square_upscale(square_grid: bytes) -> bytes:
    return render_upscale(square_grid, 2)


@pytest.fixture(scope="module")
def quadrants(square_grid: bytes) -> list[bytes]:
    return split_grid(square_grid)


# --- grids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect", "size"),
    [
        ((1, 1), (1024, 1024)),
        ((16, 9), (1024, 576)),
        ((9, 16), (576, 1024)),
        ((3, 2), (1024, 682)),
        ((2, 3), (682, 1024)),
        ((32, 18), (1024, 576)),
        ((1, 14), (74, 1024)),
        ((14, 1), (1024, 74)),
    ],
)
def test_grid_size_follows_the_aspect_ratio(aspect: tuple[int, int], size: tuple[int, int]) -> None:
    assert grid_size(aspect) == size
    assert png_size(render_grid("a red car", 1, aspect)) == size


def test_grid_is_deterministic(square_grid: bytes) -> None:
    assert render_grid(PROMPT, 42) == square_grid
    assert render_grid(PROMPT, 42, (1, 1)) == square_grid


def test_seed_and_prompt_change_the_picture(square_grid: bytes) -> None:
    original = load(square_grid)

    assert mean_difference(original, load(render_grid(PROMPT, 43))) > 10
    assert mean_difference(original, load(render_grid(PROMPT + " at night", 42))) > 10


def test_the_four_quadrants_are_different_pictures(quadrants: list[bytes]) -> None:
    images = [load(q) for q in quadrants]

    assert len(set(quadrants)) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert mean_difference(images[i], images[j]) > 10


def test_base_makes_the_grid_a_perturbation_of_its_parent(square_grid: bytes) -> None:
    parent = load(square_grid)
    fresh = load(render_grid(PROMPT, 7))
    derived = load(render_grid(PROMPT, 7, base=square_grid))

    assert mean_difference(derived, parent) < mean_difference(fresh, parent) / 2


def test_base_of_another_size_is_fitted_to_the_new_grid(square_grid: bytes) -> None:
    assert png_size(render_grid(PROMPT, 7, (16, 9), base=square_grid)) == (1024, 576)


def test_non_ascii_prompts_render() -> None:
    assert png_size(render_grid("一只红色的狐狸 café", 1)) == (1024, 1024)


@pytest.mark.parametrize("aspect", [(0, 1), (1, 0), (-1, 2)])
def test_grid_refuses_a_degenerate_aspect(aspect: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="aspect ratio must be positive"):
        render_grid(PROMPT, 1, aspect)


# --- split and thumbnails -----------------------------------------------------------------------


def test_split_grid_returns_the_four_quadrants_in_u1_to_u4_order(
    square_grid: bytes, quadrants: list[bytes]
) -> None:
    grid = load(square_grid)
    boxes = [(0, 0, 512, 512), (512, 0, 1024, 512), (0, 512, 512, 1024), (512, 512, 1024, 1024)]

    assert [png_size(q) for q in quadrants] == [(512, 512)] * 4
    for quadrant, box in zip(quadrants, boxes, strict=True):
        assert (
            ImageChops.difference(load(quadrant).convert("RGB"), grid.crop(box)).getbbox() is None
        )


def test_grid_quadrant_is_that_split_alone(square_grid: bytes, quadrants: list[bytes]) -> None:
    assert [grid_quadrant(square_grid, n) for n in range(1, 5)] == quadrants
    with pytest.raises(ValueError):
        grid_quadrant(square_grid, 5)


def test_split_grid_of_odd_size_covers_every_pixel() -> None:
    odd = Image.linear_gradient("L").resize((101, 51)).convert("RGB")

    parts = [load(p) for p in split_grid(encoded(odd))]

    assert [p.size for p in parts] == [(50, 25), (51, 25), (50, 26), (51, 26)]
    rebuilt = Image.new("RGB", (101, 51))
    for part, position in zip(parts, [(0, 0), (50, 0), (0, 25), (50, 25)], strict=True):
        rebuilt.paste(part, position)
    assert ImageChops.difference(rebuilt, odd).getbbox() is None


def test_thumbnail_is_a_small_webp_by_default() -> None:
    wide = render_grid(PROMPT, 3, (16, 9))

    small = load(thumbnail(wide))

    assert (small.format, small.size) == ("WEBP", (256, 144))
    assert thumbnail(wide) == thumbnail(wide)


def test_thumbnail_can_be_png_and_of_any_size(square_grid: bytes) -> None:
    small = load(thumbnail(square_grid, 100, image_format="PNG"))

    assert (small.format, small.size) == ("PNG", (100, 100))
    with pytest.raises(ValueError, match="WEBP or PNG"):
        thumbnail(square_grid, image_format="GIF")


# --- upscale -----------------------------------------------------------------------------------


def test_upscale_enlarges_the_chosen_quadrant(square_grid: bytes, quadrants: list[bytes]) -> None:
    upscaled = render_upscale(square_grid, 3)
    image = load(upscaled)

    assert image.size == (1024, 1024)
    assert upscaled == render_upscale(square_grid, 3)
    own = mean_difference(load(quadrants[2]), image)
    assert own < 3
    assert all(mean_difference(load(quadrants[i]), image) > 10 for i in (0, 1, 3))


def test_upscale_follows_the_grid_aspect() -> None:
    wide = render_grid(PROMPT, 1, (16, 9))

    assert png_size(render_upscale(wide, 1)) == (1024, 576)
    assert png_size(render_upscale(wide, 1, factor=4)) == (2048, 1152)


def test_upscale_of_a_whole_image_and_the_output_cap(square_upscale: bytes) -> None:
    # A flat image keeps the 4096 px PNG cheap to encode.
    flat = encoded(Image.new("RGB", (1100, 550), (30, 60, 90)))

    assert png_size(render_upscale(square_upscale, None)) == (2048, 2048)
    assert png_size(render_upscale(flat, None, factor=4)) == (4096, 2048)


def test_creative_upscale_differs_from_subtle(square_upscale: bytes) -> None:
    subtle = render_upscale(square_upscale, None, factor=1)
    creative = render_upscale(square_upscale, None, factor=1, creative=True)

    assert subtle != creative
    assert mean_difference(load(subtle), load(creative)) > 1


@pytest.mark.parametrize(
    ("index", "factor", "message"),
    [(0, 2, "grid index must be 1-4"), (5, 2, "grid index must be 1-4"), (1, 5, "between 1 and 4")],
)
def test_upscale_rejects_bad_arguments(
    square_grid: bytes, index: int, factor: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_upscale(square_grid, index, factor=factor)


# --- variation ---------------------------------------------------------------------------------


def test_variation_is_a_grid_of_four_versions_of_the_source(square_upscale: bytes) -> None:
    source = load(square_upscale)

    variation = render_variation(square_upscale, 9, "grid")
    parts = [load(p) for p in split_grid(variation)]

    assert png_size(variation) == (1024, 1024)
    assert variation == render_variation(square_upscale, 9, "grid")
    assert len({p.tobytes() for p in parts}) == 4
    assert all(mean_difference(part, source) < 40 for part in parts)


def test_subtle_variations_stay_closer_to_the_source_than_strong_ones(
    square_upscale: bytes,
) -> None:
    source = load(square_upscale)

    def distance(strength: str) -> float:
        grid = render_variation(square_upscale, 9, strength)  # type: ignore[arg-type]
        return sum(mean_difference(load(p), source) for p in split_grid(grid)) / 4

    assert distance("subtle") < distance("grid") < distance("strong")


def test_variation_keeps_the_source_aspect() -> None:
    wide = render_upscale(render_grid(PROMPT, 1, (16, 9)), 1)

    assert png_size(render_variation(wide, 1, "subtle")) == (1024, 576)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_variation_accepts_any_image_mode(mode: str) -> None:
    source = Image.new("RGB", (40, 30), (10, 200, 30)).convert(mode)
    image_format = "JPEG" if mode == "CMYK" else "PNG"

    assert png_size(render_variation(encoded(source, image_format), 1, "subtle")) == (1024, 768)


def test_variation_rejects_an_unknown_strength(square_upscale: bytes) -> None:
    with pytest.raises(ValueError, match="subtle, grid or strong"):
        render_variation(square_upscale, 1, "wild")  # type: ignore[arg-type]


# --- zoom and pan ------------------------------------------------------------------------------


@pytest.mark.parametrize(("factor", "inner"), [(2.0, 256), (1.5, 341), (1.0, 512)])
def test_zoom_puts_the_shrunken_source_in_the_centre(
    square_upscale: bytes, factor: float, inner: int
) -> None:
    source = load(square_upscale)

    zoomed = render_zoom(square_upscale, factor)
    parts = [load(p) for p in split_grid(zoomed)]

    assert png_size(zoomed) == (1024, 1024)
    offset = (512 - inner) // 2
    for part in parts:
        centre = part.crop((offset, offset, offset + inner, offset + inner))
        assert mean_difference(centre, source) < 3
    if factor > 1:
        assert len({p.tobytes() for p in parts}) == 4
        border = parts[0].crop((0, 0, 512, offset))
        assert mean_difference(border, source.crop((0, 0, 1024, 2 * offset))) > 3


def test_zoom_is_deterministic_and_seeded(square_upscale: bytes) -> None:
    assert render_zoom(square_upscale, 2.0) == render_zoom(square_upscale, 2.0)
    assert render_zoom(square_upscale, 2.0) != render_zoom(square_upscale, 2.0, seed=1)


def test_custom_zoom_can_change_the_canvas_aspect(square_upscale: bytes) -> None:
    zoomed = render_zoom(square_upscale, 1.25, aspect=(16, 9))
    part = load(split_grid(zoomed)[0])

    assert png_size(zoomed) == (1024, 576)
    # The square source fits the 288 px height divided by 1.25 and sits in the middle.
    side = round(288 / 1.25)
    left, top = (512 - side) // 2, (288 - side) // 2
    assert (
        mean_difference(part.crop((left, top, left + side, top + side)), load(square_upscale)) < 3
    )


@pytest.mark.parametrize("factor", [0.5, 0.99, 2.01, 3])
def test_zoom_rejects_factors_outside_one_to_two(square_upscale: bytes, factor: float) -> None:
    with pytest.raises(ValueError, match="between 1 and 2"):
        render_zoom(square_upscale, factor)


@pytest.mark.parametrize(
    ("direction", "size", "source_box"),
    [
        ("left", (1024, 682), (171, 0, 512, 341)),
        ("right", (1024, 682), (0, 0, 341, 341)),
        ("up", (682, 1024), (0, 171, 341, 512)),
        ("down", (682, 1024), (0, 0, 341, 341)),
    ],
)
def test_pan_extends_the_canvas_on_one_side(
    square_upscale: bytes,
    direction: str,
    size: tuple[int, int],
    source_box: tuple[int, int, int, int],
) -> None:
    source = load(square_upscale)

    panned = render_pan(square_upscale, direction)  # type: ignore[arg-type]
    parts = [load(p) for p in split_grid(panned)]

    assert png_size(panned) == size
    assert panned == render_pan(square_upscale, direction)  # type: ignore[arg-type]
    for part in parts:
        assert mean_difference(part.crop(source_box), source) < 3
    assert len({p.tobytes() for p in parts}) == 4


def test_pan_rejects_an_unknown_direction(square_upscale: bytes) -> None:
    with pytest.raises(ValueError, match="left, right, up or down"):
        render_pan(square_upscale, "sideways")  # type: ignore[arg-type]


# --- inpaint -----------------------------------------------------------------------------------


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return encoded(mask)


def test_inpaint_changes_only_the_masked_region(quadrants: list[bytes]) -> None:
    source = load(quadrants[0]).convert("RGB")
    box = (100, 150, 300, 400)

    result = render_inpaint(quadrants[0], mask_png((512, 512), box), "a blue moon", 5)
    parts = [load(p).convert("RGB") for p in split_grid(result)]

    assert png_size(result) == (1024, 1024)
    assert result == render_inpaint(quadrants[0], mask_png((512, 512), box), "a blue moon", 5)
    for part in parts:
        changed = ImageChops.difference(part, source).getbbox()
        assert changed is not None
        left, top, right, bottom = changed
        assert box[0] <= left and box[1] <= top and right <= box[2] and bottom <= box[3]
        assert mean_difference(part.crop(box), source.crop(box)) > 10
    assert len({p.tobytes() for p in parts}) == 4


def test_inpaint_mask_of_another_size_is_scaled(quadrants: list[bytes]) -> None:
    source = load(quadrants[1]).convert("RGB")

    result = render_inpaint(quadrants[1], mask_png((64, 64), (0, 0, 32, 64)), "x", 1)

    changed = ImageChops.difference(load(split_grid(result)[0]).convert("RGB"), source).getbbox()
    assert changed is not None and changed[2] <= 256


def test_transparent_mask_pixels_change_nothing(quadrants: list[bytes]) -> None:
    source = load(quadrants[0]).convert("RGB")
    invisible_white = encoded(Image.new("RGBA", (512, 512), (255, 255, 255, 0)))

    result = render_inpaint(quadrants[0], invisible_white, "x", 1)

    for part in split_grid(result):
        assert ImageChops.difference(load(part).convert("RGB"), source).getbbox() is None


# --- blend -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dimensions", "size"),
    [("PORTRAIT", (682, 1024)), ("SQUARE", (1024, 1024)), ("LANDSCAPE", (1024, 682))],
)
def test_blend_follows_the_dimensions(
    quadrants: list[bytes], dimensions: str, size: tuple[int, int]
) -> None:
    blended = render_blend(quadrants[:2], dimensions, 1)

    assert png_size(blended) == size
    assert blended == render_blend(quadrants[:2], dimensions, 1)


def test_blend_mixes_its_inputs(quadrants: list[bytes]) -> None:
    red = encoded(Image.new("RGB", (64, 64), (255, 0, 0)))
    blue = encoded(Image.new("RGB", (64, 64), (0, 0, 255)))

    parts = [load(p) for p in split_grid(render_blend([red, blue], "SQUARE", 3))]

    for part in parts:
        red_mean, green_mean, blue_mean = ImageStat.Stat(part).mean
        assert red_mean > 40 and blue_mean > 40 and green_mean < 5
    assert len({p.tobytes() for p in parts}) == 4


def test_blend_of_five_images(quadrants: list[bytes], square_grid: bytes) -> None:
    assert png_size(render_blend([*quadrants, square_grid], "square", 2)) == (1024, 1024)


@pytest.mark.parametrize("count", [1, 6])
def test_blend_needs_two_to_five_images(quadrants: list[bytes], count: int) -> None:
    with pytest.raises(ValueError, match=f"2 to 5 images, got {count}"):
        render_blend((quadrants * 2)[:count], "SQUARE", 1)


def test_blend_rejects_unknown_dimensions(quadrants: list[bytes]) -> None:
    with pytest.raises(ValueError, match="PORTRAIT, SQUARE or LANDSCAPE"):
        render_blend(quadrants[:2], "WIDE", 1)


# --- swap face ---------------------------------------------------------------------------------


def test_swap_face_pastes_the_source_into_the_centre_of_the_target(quadrants: list[bytes]) -> None:
    target = load(quadrants[1]).convert("RGB")

    swapped = render_swap_face(quadrants[0], quadrants[1])
    result = load(swapped)

    assert result.size == (512, 512)
    assert swapped == render_swap_face(quadrants[0], quadrants[1])
    changed = ImageChops.difference(result.convert("RGB"), target).getbbox()
    assert changed is not None
    left, top, right, bottom = changed
    assert left >= 150 and top >= 80
    assert right <= 362 and bottom <= 335
    assert (
        mean_difference(result.crop((216, 175, 296, 255)), target.crop((216, 175, 296, 255))) > 10
    )


def test_swap_face_caps_a_large_target(quadrants: list[bytes]) -> None:
    big = encoded(Image.new("RGB", (3000, 1500), (9, 9, 9)))

    assert png_size(render_swap_face(quadrants[0], big)) == (1024, 512)


# --- describe and shorten ------------------------------------------------------------------------


def test_describe_gives_four_deterministic_prompts_with_the_aspect() -> None:
    red = encoded(Image.new("RGB", (300, 200), (214, 40, 57)), "JPEG")

    prompts = describe_prompts(red)

    assert len(prompts) == 4
    assert prompts == describe_prompts(red)
    assert all(p.endswith(" --ar 3:2") for p in prompts)
    assert prompts[0].startswith("a vivid red and ")
    assert len(set(prompts)) == 4


def test_describe_names_the_colours_it_sees() -> None:
    half = Image.new("RGB", (200, 200), (40, 90, 210))
    half.paste((245, 133, 30), (0, 0, 100, 200))

    prompts = describe_prompts(encoded(half))

    assert "orange" in prompts[0] and "blue" in prompts[0]
    assert prompts[3].startswith("an abstract square poster")
    assert prompts[0].endswith("--ar 1:1")


def test_describe_differs_between_images(square_grid: bytes) -> None:
    wide = render_grid("a green meadow", 1, (16, 9))

    assert describe_prompts(square_grid) != describe_prompts(wide)
    assert describe_prompts(wide)[0].endswith("16:9 --ar 16:9")


def test_shorten_gives_five_progressively_shorter_prompts_keeping_parameters() -> None:
    prompt = (
        "a very detailed portrait of an old fisherman with a red hat, in the rain, "
        "cinematic lighting --ar 2:3 --v 6"
    )

    analysis, options = shorten_prompt(prompt)

    assert (analysis, options) == shorten_prompt(prompt)
    assert len(options) == 5
    lengths = [len(o.removesuffix(" --ar 2:3 --v 6").split()) for o in options]
    assert lengths == sorted(lengths, reverse=True)
    assert len(set(lengths)) == 5
    assert all(o.endswith(" --ar 2:3 --v 6") for o in options)
    for option in options:
        words = option.removesuffix(" --ar 2:3 --v 6").split()
        assert not {"a", "of", "an", "with", "the", "in", "very"} & set(words)
    assert analysis.startswith("IMPORTANT TOKENS\n")
    assert "~~of~~" in analysis
    assert "\n\nTOKEN SCORES\n" in analysis


def test_shorten_output_is_pinned() -> None:
    analysis, options = shorten_prompt("a red fox jumping over a lazy dog")

    # Five content words cannot shrink five times: the last option repeats the shortest.
    assert options == [
        "red fox jumping dog",
        "red fox jumping",
        "red jumping",
        "jumping",
        "jumping",
    ]
    assert analysis == (
        "IMPORTANT TOKENS\n~~a~~ **red** fox **jumping** ~~over~~ ~~a~~ lazy dog\n\n"
        "TOKEN SCORES\njumping 1.00, red 0.77, fox 0.58, dog 0.50, lazy 0.48"
    )


def test_shorten_of_one_word_repeats_it() -> None:
    assert shorten_prompt("fox --ar 1:1")[1] == ["fox --ar 1:1"] * 5


@pytest.mark.parametrize("prompt", ["", "   ", "--ar 16:9", ", ; ."])
def test_shorten_needs_words(prompt: str) -> None:
    with pytest.raises(ValueError, match="shorten needs a prompt with words"):
        shorten_prompt(prompt)
