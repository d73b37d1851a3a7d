"""The sandbox's clips (pure): real H.264 of the promised length, motion from the image, loops
that come back, extensions that continue and stop at Midjourney's limit."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from apps.engines.sandbox import video


def picture(size: tuple[int, int] = (160, 96)) -> bytes:
    """Smooth gradients (red left to right, green top to bottom) and a disc: the further the
    camera moves, the more every pixel changes (a repeating pattern would hide that)."""
    across = Image.linear_gradient("L").rotate(90).resize(size)
    down = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (across, down, Image.new("L", size, 90)))
    ImageDraw.Draw(image).ellipse((60, 30, 100, 66), fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def frames(clip: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(clip)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return [frame.to_image() for frame in container.decode(video=0)]


def distance(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean)


def test_a_clip_is_five_seconds_of_480p_motion_keeping_the_aspect_ratio() -> None:
    clip = video.render_clip(picture(), motion="high", seed=3)
    shown = frames(clip.data)
    assert len(shown) == video.CLIP_SECONDS * video.FPS
    assert shown[0].size == (480, 288)
    assert distance(shown[0], shown[-1]) > 1.0  # the camera moved
    assert Image.open(io.BytesIO(clip.poster)).size == (480, 288)


def test_high_motion_moves_further_than_low() -> None:
    low = frames(video.render_clip(picture(), motion="low", seed=5).data)
    high = frames(video.render_clip(picture(), motion="high", seed=5).data)
    assert distance(high[0], high[-1]) > distance(low[0], low[-1])


def test_a_loop_ends_where_it_began() -> None:
    shown = frames(video.render_clip(picture(), motion="high", seed=9, loop=True).data)
    assert distance(shown[0], shown[-1]) < distance(shown[0], shown[len(shown) // 2]) / 2


def test_clips_of_a_batch_differ() -> None:
    first = frames(video.render_clip(picture(), motion="high", seed=1, index=0).data)
    second = frames(video.render_clip(picture(), motion="high", seed=1, index=1).data)
    assert distance(first[-1], second[-1]) > 0.5


def test_an_extension_continues_and_stops_at_the_limit() -> None:
    clip = video.render_clip(picture(), motion="low", seed=2).data
    longer = video.extend_clip(clip, motion="high", seed=2)
    assert len(frames(longer.data)) == (video.CLIP_SECONDS + video.EXTEND_SECONDS) * video.FPS
    current = longer.data
    while len(frames(current)) + video.EXTEND_SECONDS * video.FPS <= video.MAX_SECONDS * video.FPS:
        current = video.extend_clip(current, motion="low", seed=2).data
    with pytest.raises(ValueError, match="21 seconds"):
        video.extend_clip(current, motion="low", seed=2)
