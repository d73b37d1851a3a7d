"""Real short videos for the sandbox engine: MP4 (H.264) clips animated from an image.

Midjourney's video model turns a still into a few seconds of motion; the sandbox does the same
with a camera move over the image — a pan and a zoom whose direction and speed come from the
seed, and a parallax between the picture's centre (the "subject") and its surroundings — so a
client sees a real, playable clip that is clearly made from its image. ``high`` motion moves
further and faster than ``low``; a ``loop`` clip returns to its first frame; a clip with an end
frame dissolves into that image over its last second and a half and ends on it; an extension
continues an earlier clip from its last frame. SD clips are 480p-sized, HD (720p) clips have
the pixel count of 1280x720 in the image's shape (exactly 1280x720 for 16:9).

Encoding is PyAV (maintained FFmpeg bindings whose wheels bundle FFmpeg and libx264, so no
system package is needed). Work is bounded: clips are at most ``MAX_SIDE`` px on their long
side, ``FPS`` frames a second, and an extension keeps at most ``MAX_SECONDS`` in all.

No Django settings, no database: ``video_result`` reads only the frozen ``Job``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from apps.engines.base import Job, PermanentEngineError, PollResult, ResultImage, ResultVideo
from apps.tasks.enums import ErrorCode

__all__ = [
    "CLIP_SECONDS",
    "EXTEND_SECONDS",
    "FPS",
    "HD_PIXELS",
    "MAX_SECONDS",
    "MAX_SIDE",
    "Clip",
    "Motion",
    "extend_clip",
    "first_frame",
    "last_frame",
    "render_clip",
    "video_result",
]

Motion = Literal["low", "high"]


def _av() -> ModuleType:
    # Imported on first use: FFmpeg's libraries cost every process that loads them ~20 MB,
    # and only the workers that render or read a clip need them (not the web processes).
    import av as loaded

    return loaded


#: Midjourney's clips: 480p ("SD"), about five seconds, extended four seconds at a time up to
#: about 21 seconds.
MAX_SIDE = 480
#: HD ("720p"): as many pixels as 1280x720, in the start frame's shape.
HD_PIXELS = 1280 * 720
#: The share of a clip over which it dissolves into its end frame.
_END_BLEND = 0.3
CLIP_SECONDS = 5
EXTEND_SECONDS = 4
MAX_SECONDS = 21
#: Enough for visibly smooth motion at a fraction of the encoding work of 24 fps.
FPS = 12

#: How far the camera travels over a clip, as a share of the frame (pan) and of its scale (zoom).
_TRAVEL = {"low": (0.06, 0.08), "high": (0.18, 0.22)}


@dataclass(frozen=True)
class Clip:
    """An encoded clip and its first frame (the poster, PNG)."""

    data: bytes
    poster: bytes


def _even(value: float) -> int:
    return max(16, int(value) // 2 * 2)


def _frame_size(width: int, height: int, *, hd: bool = False) -> tuple[int, int]:
    if hd:
        scale = math.sqrt(HD_PIXELS / (width * height))
        return _even(round(width * scale)), _even(round(height * scale))
    scale = MAX_SIDE / max(width, height)
    return _even(width * scale), _even(height * scale)


def _rng(seed: int, index: int, salt: str) -> float:
    digest = hashlib.sha256(f"video:{salt}:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _subject_mask(size: tuple[int, int]) -> Image.Image:
    """A soft ellipse over the centre: the part that moves in front of the rest."""
    width, height = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(
        (width * 0.22, height * 0.18, width * 0.78, height * 0.86), fill=255
    )
    return mask.filter(ImageFilter.GaussianBlur(max(2, min(width, height) // 14)))


def _view(
    image: Image.Image, size: tuple[int, int], zoom: float, dx: float, dy: float
) -> Image.Image:
    """The frame the camera sees: ``image`` zoomed by ``zoom`` and shifted by (dx, dy) of it."""
    width, height = image.size
    crop_w, crop_h = width / zoom, height / zoom
    spare_x, spare_y = (width - crop_w) / 2, (height - crop_h) / 2
    left = spare_x + max(-1.0, min(1.0, dx)) * spare_x
    top = spare_y + max(-1.0, min(1.0, dy)) * spare_y
    return image.resize(
        size, Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )


def _frames(
    source: Image.Image,
    *,
    motion: Motion,
    seed: int,
    index: int,
    seconds: int,
    loop: bool,
    size: tuple[int, int] | None = None,
    end: Image.Image | None = None,
) -> list[Image.Image]:
    """The clip's frames: a camera move over ``source`` with the subject in parallax, ending
    on ``end`` (fitted to the frame) when there is one."""
    size = size or _frame_size(*source.size)
    # Work on a canvas a little larger than the frame, so zooming in never upsamples much.
    canvas = source.convert("RGB").resize(
        (int(size[0] * 1.25), int(size[1] * 1.25)), Image.Resampling.BILINEAR
    )
    mask = _subject_mask(size)
    pan, zoom_travel = _TRAVEL[motion]
    angle = _rng(seed, index, "angle") * 2 * math.pi
    zoom_in = _rng(seed, index, "zoom") < 0.6
    count = seconds * FPS
    frames = []
    for step in range(count):
        share = step / max(1, count - 1)
        # A loop goes out and comes back; otherwise the move eases in and out once.
        t = math.sin(math.pi * share) if loop else (1 - math.cos(math.pi * share)) / 2
        zoom = 1.02 + zoom_travel * (t if zoom_in else 1 - t)
        dx, dy = math.cos(angle) * pan * 4 * t, math.sin(angle) * pan * 4 * t
        back = _view(canvas, size, zoom, dx, dy)
        # The subject moves half as far again as the background: depth.
        front = _view(canvas, size, zoom * (1 + 0.04 * t), dx * 1.5, dy * 1.5)
        frames.append(Image.composite(front, back, mask))
    if end is not None:
        _dissolve_into(frames, ImageOps.fit(end.convert("RGB"), size, Image.Resampling.BILINEAR))
    return frames


def _dissolve_into(frames: list[Image.Image], end: Image.Image) -> None:
    """The last ``_END_BLEND`` of ``frames`` cross-fade into ``end``; the last one is ``end``."""
    count = max(2, int(len(frames) * _END_BLEND))
    first = len(frames) - count
    for step in range(count):
        share = (step + 1) / count
        frames[first + step] = Image.blend(frames[first + step], end, share)


def _encode(frames: list[Image.Image]) -> bytes:
    # A temporary file rather than memory: "faststart" (the index first, so a browser can play
    # while downloading) rewrites the file at the end, which FFmpeg does only on a real file.
    with tempfile.TemporaryDirectory(prefix="mjgate-video-") as folder:
        path = os.path.join(folder, "clip.mp4")
        _write(path, frames)
        with open(path, "rb") as handle:
            return handle.read()


def _write(path: str, frames: list[Image.Image]) -> None:
    av = _av()
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {"preset": "ultrafast", "crf": "26", "threads": "1"}
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = number
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _decode(data: bytes) -> list[Image.Image]:
    """Every frame of a clip; ``ValueError`` when it is not a video FFmpeg can read."""
    av = _av()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            return [frame.to_image() for frame in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise ValueError("The video could not be read.") from exc


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")


def render_clip(
    source: bytes,
    *,
    motion: Motion,
    seed: int,
    index: int = 0,
    loop: bool = False,
    hd: bool = False,
    end: bytes | None = None,
) -> Clip:
    """A ``CLIP_SECONDS`` clip animated from the image ``source`` (clip ``index`` of a batch),
    HD-sized with ``hd``, ending on the image ``end`` when given."""
    image = _image(source)
    frames = _frames(
        image,
        motion=motion,
        seed=seed,
        index=index,
        seconds=CLIP_SECONDS,
        loop=loop,
        size=_frame_size(*image.size, hd=hd),
        end=_image(end) if end is not None else None,
    )
    return Clip(data=_encode(frames), poster=_png(frames[0]))


def first_frame(clip: bytes) -> bytes:
    """The first frame of an MP4 clip, as PNG (a poster when an upstream sends none).

    ``ValueError`` when the clip is not a video FFmpeg can read."""
    av = _av()
    try:
        with av.open(io.BytesIO(clip), mode="r") as container:
            for frame in container.decode(video=0):
                return _png(frame.to_image())
    except av.error.FFmpegError as exc:
        raise ValueError("The video could not be read.") from exc
    raise ValueError("The video has no frames.")


def last_frame(clip: bytes) -> bytes:
    """The last frame of an MP4 clip, as PNG (an extension starts from it)."""
    frames = _decode(clip)
    if not frames:
        raise ValueError("The video has no frames.")
    return _png(frames[-1])


def extend_clip(
    clip: bytes, *, motion: Motion, seed: int, index: int = 0, end: bytes | None = None
) -> Clip:
    """``clip`` followed by ``EXTEND_SECONDS`` more of motion from its last frame (ending on
    the image ``end`` when given).

    Raises ``ValueError`` when the clip is already ``MAX_SECONDS`` long (Midjourney's limit).
    """
    earlier = _decode(clip)
    if not earlier:
        raise ValueError("The video has no frames.")
    if len(earlier) + EXTEND_SECONDS * FPS > MAX_SECONDS * FPS:
        raise ValueError(f"A video can be extended up to {MAX_SECONDS} seconds.")
    size = earlier[0].size
    more = _frames(
        earlier[-1],
        motion=motion,
        seed=seed,
        index=index,
        seconds=EXTEND_SECONDS,
        loop=False,
        size=size,
        end=_image(end) if end is not None else None,
    )
    return Clip(data=_encode(earlier + more), poster=_png(earlier[0]))


# --- a VIDEO job ------------------------------------------------------------------------------


def _invalid(message: str) -> PermanentEngineError:
    return PermanentEngineError(message, error_code=ErrorCode.INVALID_PARAMETER)


def _motion(job: Job) -> Motion:
    params = job.params
    motion = params.get("motion") or ("high" if "high" in str(params.get("variant", "")) else "low")
    if motion not in ("low", "high"):
        raise _invalid(f"Unknown video motion '{motion}'.")
    return "high" if motion == "high" else "low"


def _is_extend(job: Job) -> bool:
    return bool(job.params.get("extend")) or str(job.params.get("variant", "")).endswith("_extend")


def _index(job: Job) -> int:
    try:
        return max(1, int(job.params.get("index") or 1))
    except (TypeError, ValueError):
        return 1


def _start_frame(job: Job) -> bytes:
    """The image a new clip starts from: the uploaded start frame, or the parent's image."""
    if job.images:
        return job.images[0].read()
    parent = job.parent
    if parent is None or parent.grid is None:
        raise _invalid("A video needs a start frame: an image, or a parent task with one.")
    if parent.splits:
        index = _index(job)
        if index > len(parent.splits):
            raise _invalid(f"The parent grid has no image {index}.")
        return parent.splits[index - 1].read()
    return parent.grid.read()


def _parent_clip(job: Job) -> bytes:
    parent = job.parent
    if parent is None or not parent.videos:
        raise _invalid("Only a video can be extended; the parent task has no clip.")
    index = _index(job)
    if index > len(parent.videos):
        raise _invalid(f"The parent video has no clip {index}.")
    return parent.videos[index - 1].read()


def video_result(job: Job, seed: int) -> PollResult:
    """Render a VIDEO job: ``batch_size`` clips (animated, or extended from a parent clip)."""
    motion = _motion(job)
    batch = int(job.params.get("batch_size") or 4)
    if batch not in (1, 2, 4):
        raise _invalid(f"A video batch holds 1, 2 or 4 clips; got {batch}.")
    loop = bool(job.params.get("loop"))
    hd = job.params.get("resolution") == "720p"
    ends = job.references.get("end") or ()
    end = ends[0].read() if ends else None
    clips: list[Clip] = []
    if _is_extend(job):
        earlier = _parent_clip(job)
        for number in range(batch):
            try:
                clips.append(extend_clip(earlier, motion=motion, seed=seed, index=number, end=end))
            except ValueError as exc:
                raise _invalid(str(exc)) from exc
            except OSError as exc:  # Pillow could not read the end frame
                raise _invalid("The end frame is not an image the sandbox can read.") from exc
    else:
        source = _start_frame(job)
        try:
            clips = [
                render_clip(
                    source, motion=motion, seed=seed, index=number, loop=loop, hd=hd, end=end
                )
                for number in range(batch)
            ]
        except OSError as exc:  # Pillow could not read the start or end frame
            raise _invalid("The start or end frame is not an image the sandbox can read.") from exc
    return PollResult(
        status=PollResult.SUCCESS,
        progress=100,
        image=ResultImage(data=clips[0].poster),
        videos=tuple(ResultVideo(data=clip.data) for clip in clips),
        is_grid=False,
        seed=seed,
        properties={
            "videoDuration": _seconds(clips[0].data),
            "batchSize": batch,
            "videoResolution": "720p" if hd else "480p",
        },
    )


def _seconds(clip: bytes) -> float:
    with _av().open(io.BytesIO(clip), mode="r") as container:
        return round((container.duration or 0) / 1_000_000, 2)
