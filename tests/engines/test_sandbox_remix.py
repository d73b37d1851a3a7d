"""The sandbox's remix is visible: the changed prompt's colours take over the picture."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageStat

from apps.engines.sandbox import render
from apps.engines.sandbox.remix import render_remix


def blueness(png: bytes) -> float:
    with Image.open(io.BytesIO(png)) as image:
        red, green, blue = ImageStat.Stat(image.convert("RGB")).mean
    return blue - (red + green) / 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_remixed_variation_takes_the_new_prompts_colours(seed: int) -> None:
    parent = render.render_grid("a red barn", seed)
    varied = render.render_variation(render.split_grid(parent)[0], seed, "grid")
    remixed = render_remix(varied, "a deep blue ocean", seed)
    with Image.open(io.BytesIO(remixed)) as image, Image.open(io.BytesIO(varied)) as before:
        assert image.size == before.size
    assert blueness(remixed) > blueness(varied) + 15


def test_a_remixed_pan_keeps_its_shape() -> None:
    parent = render.render_upscale(render.render_grid("a red barn", 4), 1)
    panned = render.render_pan(parent, "left", seed=4)
    remixed = render_remix(panned, "a deep blue ocean", 4)
    with Image.open(io.BytesIO(remixed)) as image, Image.open(io.BytesIO(panned)) as before:
        assert image.size == before.size
    assert blueness(remixed) > blueness(panned) + 15
