#!/usr/bin/env python
"""The sandbox's video clips: time to render one 480p clip, against a baseline. JSON out.

    .venv/bin/python bench/video.py                 # 5 rounds
    .venv/bin/python bench/video.py --rounds 10

The baseline encodes the same number of frames of a still image with the same encoder settings
(PyAV, libx264), so the ratio says what the camera move and parallax cost on top of encoding,
whatever the machine. Also reported: one 4 s extension of a clip and a whole batch of 4 (what a
default VIDEO job renders), and the clip's size, duration and codec.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
from PIL import Image

from apps.engines.sandbox import render, video


def _timed(function: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    source = render.render_grid("a lighthouse at dusk", 7, (1, 1))
    with Image.open(io.BytesIO(source)) as opened:
        still = opened.convert("RGB").resize((video.MAX_SIDE, video.MAX_SIDE))
    frames = [still] * (video.CLIP_SECONDS * video.FPS)

    clip = video.render_clip(source, motion="high", seed=7)
    baseline = _timed(lambda: video._encode(frames), args.rounds)
    one = _timed(lambda: video.render_clip(source, motion="high", seed=7), args.rounds)
    extend = _timed(lambda: video.extend_clip(clip.data, motion="low", seed=7), args.rounds)
    batch = _timed(
        lambda: [video.render_clip(source, motion="low", seed=7, index=n) for n in range(4)],
        max(1, args.rounds // 2),
    )
    with av.open(io.BytesIO(clip.data)) as container:
        stream = container.streams.video[0]
        codec, seconds = stream.codec_context.name, (container.duration or 0) / 1_000_000
        size = (stream.width, stream.height)
    print(
        json.dumps(
            {
                "bench": "sandbox_video",
                "clip_seconds": round(seconds, 2),
                "codec": codec,
                "size": list(size),
                "fps": video.FPS,
                "clip_bytes": len(clip.data),
                "baseline_encode_still_s": round(baseline, 3),
                "render_clip_s": round(one, 3),
                "extend_clip_s": round(extend, 3),
                "batch_of_4_s": round(batch, 3),
                "ratio_clip_to_baseline": round(one / baseline, 2) if baseline else None,
            }
        )
    )


if __name__ == "__main__":
    main()
