"""The fake Midjourney bot's pictures: small, deterministic PNGs drawn with Pillow.

A grid is four coloured quadrants (so a split really yields four different images); a single
image is one panel. Colours come from the prompt and the job hash, so two jobs differ. Video
clips are small real MP4s (H.264, PyAV) drifting over their start frame.
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any

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


# --- video -------------------------------------------------------------------------------------
#
# The bot's clips: real H.264 MP4s (PyAV), small so tests stay quick — a camera drifting over
# the start frame for ``CLIP_SECONDS`` (Midjourney's five), and an extension that continues a
# clip from its last frame for ``EXTEND_SECONDS`` more (its four).

CLIP_SIDE = 96
CLIP_FPS = 8
CLIP_SECONDS = 5
EXTEND_SECONDS = 4
MAX_SECONDS = 21


def _av() -> Any:
    # Loaded on first use, as the sandbox does: FFmpeg's libraries are large.
    import av

    return av


def _drift(
    image: Image.Image, *, motion: str, seed: str, seconds: int, loop: bool
) -> list[Image.Image]:
    canvas = image.convert("RGB").resize((CLIP_SIDE * 3 // 2, CLIP_SIDE * 3 // 2))
    spare = canvas.width - CLIP_SIDE
    digest = hashlib.sha256(seed.encode()).digest()
    reach = (0.5 if motion == "low" else 1.0) * spare
    direction = 1 if digest[0] % 2 else -1
    count = seconds * CLIP_FPS
    frames = []
    for step in range(count):
        share = step / max(1, count - 1)
        travel = math.sin(math.pi * share) if loop else share
        offset = int(spare / 2 + direction * (travel - 0.5) * reach)
        left = max(0, min(spare, offset))
        top = max(0, min(spare, spare // 2 + (digest[1] % 3 - 1) * int(travel * reach / 2)))
        frames.append(canvas.crop((left, top, left + CLIP_SIDE, top + CLIP_SIDE)))
    return frames


def _encode(frames: list[Image.Image]) -> bytes:
    av = _av()
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1"}
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def _decode(clip: bytes) -> list[Image.Image]:
    av = _av()
    with av.open(io.BytesIO(clip), mode="r") as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def clip_mp4(frame: bytes, *, motion: str, seed: str, loop: bool = False) -> bytes:
    """A five-second clip animated from the image ``frame``."""
    with Image.open(io.BytesIO(frame)) as image:
        frames = _drift(image, motion=motion, seed=seed, seconds=CLIP_SECONDS, loop=loop)
    return _encode(frames)


def extend_mp4(clip: bytes, *, motion: str, seed: str) -> bytes:
    """``clip`` and four seconds more from its last frame; ``ValueError`` past 21 seconds."""
    earlier = _decode(clip)
    if not earlier:
        raise ValueError("The video has no frames.")
    if len(earlier) + EXTEND_SECONDS * CLIP_FPS > MAX_SECONDS * CLIP_FPS:
        raise ValueError(f"A video can be extended up to {MAX_SECONDS} seconds.")
    more = _drift(earlier[-1], motion=motion, seed=seed, seconds=EXTEND_SECONDS, loop=False)
    return _encode(earlier + more)


def is_picture(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (OSError, ValueError):
        return False
    return True


def sheet_mp4(clips: list[bytes]) -> bytes:
    """The clips side by side (2×2, or 1×2), as one video: what a video message shows."""
    decoded = [_decode(clip) for clip in clips]
    columns = 2
    rows = (len(decoded) + 1) // 2
    frames = []
    for step in range(min(len(frames_of) for frames_of in decoded)):
        sheet = Image.new("RGB", (CLIP_SIDE * columns, CLIP_SIDE * rows))
        for index, frames_of in enumerate(decoded):
            sheet.paste(
                frames_of[step], ((index % columns) * CLIP_SIDE, (index // columns) * CLIP_SIDE)
            )
        frames.append(sheet)
    return _encode(frames)
