"""Accepting a VIDEO task: animate a start frame, an image of a finished task, or extend a clip.

Midjourney's video model (V1) makes a batch of short clips from one image: automatically (no
prompt) or guided by a prompt ("manual"), with low or high motion, optionally looping back to
its first frame or ending on another image (``--end <url>``, the end frame), in SD (480p) or
HD (720p, FAST/TURBO only, priced apart); a clip is then extended four seconds at a time, up
to 21 seconds (refused at submit past that). Every dialect reaches it
through :func:`task_submit_video` (the upscale buttons "Animate (High/Low motion)" and a
video's "Extend" buttons go through ``task_press`` like any button, and land in the same
engine code). Errors name domain fields: ``motion``, ``batch_size``, ``images``, ``parent``,
``index``, ``prompt``, ``resolution``, ``end_image``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from apps.core.errors import NotFound

from .. import prompt as prompts
from ..actions import (
    VIDEO_BATCH_SIZES,
    VIDEO_CLIP_SECONDS,
    VIDEO_EXTEND_SECONDS,
    VIDEO_MAX_SECONDS,
    VIDEO_MOTIONS,
    VIDEO_SECONDS,
    video_extendable,
)
from ..enums import Action, Mode, Status
from ..errors import FIELD, InputError, ParentNotFound
from ..imageinput import DecodedImage
from ..models import Task
from ..selectors import task_get
from .acceptance import SubmitOutcome, create_and_accept, new_seed
from .inputs import (
    Caller,
    ClientEcho,
    check_hook,
    check_state,
    check_tier_mode,
    discard_files,
    follow_up_pool,
    load_image,
    parse_checked,
    resolve_mode,
    resolve_pool,
    store_inputs,
)
from .pricekeys import HD, RESOLUTION
from .references import REFERENCES, rehost_prompt_urls, with_rehosted
from .translation import prompt_for_upstream

DEFAULT_BATCH_SIZE = 4
DEFAULT_MOTION = "low"
#: Midjourney's two video resolutions: SD (the default) and HD, which only Fast mode makes
#: (docs.midjourney.com "Video": "HD resolution videos, but only in Fast Mode").
SD = "480p"
VIDEO_RESOLUTIONS: tuple[str, ...] = (SD, HD)
#: The spellings clients use: ours, SD/HD, the bare heights (a dialect maps its own, such as
#: trueai-org's ``videoType``, onto these).
_RESOLUTION_NAMES = {"480p": SD, "480": SD, "sd": SD, "720p": HD, "720": HD, "hd": HD}
#: Task params: the clip's resolution, and that it ends on an end frame (the image is stored
#: as the ``end`` reference, so engines read it as ``Job.references["end"]``).
END_FRAME = "end_frame"
END_REFERENCE = "end"
#: Midjourney's video parameters, written in a prompt as in Discord; they become fields.
_FLAG_RE = re.compile(
    r"(?:^|\s)--(?P<name>motion|bs|batch|loop|video|end)(?:\s+(?P<value>(?!--)\S+))?",
    re.IGNORECASE,
)


def take_video_flags(prompt: str) -> tuple[str, dict[str, str]]:
    """Take ``--motion``, ``--bs``, ``--loop`` and ``--video`` out of ``prompt``."""
    found: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        name = match["name"].lower()
        value = match["value"] or ""
        if name == "loop" or name == "video":
            found[name] = "true"
            # A value after --loop/--video is the prompt's next word, not the flag's.
            return f" {value}" if value else ""
        if name == "end" and value.lower() == "loop":
            # ``--end loop`` is Midjourney's other spelling of ``--loop``.
            found["loop"] = "true"
            return ""
        found["bs" if name == "batch" else name] = value
        return ""

    return " ".join(_FLAG_RE.sub(take, prompt or "").split()), found


def video_motion(value: Any) -> str:
    motion = str(value if value not in (None, "") else DEFAULT_MOTION).strip().lower()
    if motion == "medium":  # trueai-org's proxy offers it; Midjourney has low and high only
        motion = "high"
    if motion not in VIDEO_MOTIONS:
        raise InputError(
            f"{FIELD} must be low or high; got '{value}'.",
            field="motion",
            details={"motion": str(value)},
        )
    return motion


def video_batch_size(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(str(value).strip())
    except (TypeError, ValueError):
        size = 0
    if size not in VIDEO_BATCH_SIZES or isinstance(value, bool):
        raise InputError(
            f"{FIELD} must be 1, 2 or 4 (clips per video job); got '{value}'.",
            field="batch_size",
            details={"batch_size": str(value)},
        )
    return size


def video_resolution(value: Any) -> str:
    """``480p`` (SD) or ``720p`` (HD) from any of the spellings clients use."""
    if value in (None, ""):
        return SD
    found = _RESOLUTION_NAMES.get(str(value).strip().lower())
    if found is None or isinstance(value, bool):
        raise InputError(
            f"{FIELD} must be 480p (SD) or 720p (HD); got '{value}'.",
            field="resolution",
            details={"resolution": str(value)},
        )
    return found


def _check_hd_mode(resolution: str, mode: str) -> None:
    if resolution == HD and mode == Mode.RELAX:
        raise InputError(
            f"HD (720p) video runs only in fast or turbo mode; {FIELD} 720p cannot run in "
            "RELAX. Use 480p, or a fast mode.",
            field="resolution",
            details={"resolution": resolution, "mode": mode},
        )


def _end_frame(value: Any, flag: str | None) -> DecodedImage | None:
    """The end frame: the ``end_image`` field (it wins), else ``--end <url>`` in the prompt."""
    chosen = value if value not in (None, "") else flag
    if chosen in (None, ""):
        return None
    return load_image(chosen, field="end_image", action=Action.VIDEO)


def _video_parent(caller: Caller, parent_id: str, *, extend: bool, index: int | None) -> Task:
    try:
        parent = task_get(organization=caller.organization, task_id=parent_id)
    except NotFound as exc:
        raise ParentNotFound("The parent task does not exist.") from exc
    if parent.status != Status.SUCCESS:
        raise InputError(
            f"The parent task is {parent.status}; only a finished task can be animated.",
            field="parent",
            details={"status": parent.status},
        )
    if caller.is_test != parent.is_test:
        raise InputError(
            "Test-mode and live tasks cannot be mixed: use a key of the same kind as the parent.",
            field="parent",
        )
    result = parent.result or {}
    if extend:
        clips = len(result.get("videos") or [])
        if not clips:
            raise InputError(
                "Only a video can be extended; the parent task has no clip.", field="parent"
            )
        count, noun = clips, "clip"
    elif result.get("videos") or not result.get("image"):
        raise InputError(
            "The parent task has no image to animate; animate an upscale, a grid image or an "
            "uploaded start frame.",
            field="parent",
        )
    else:
        count, noun = len(result.get("splits") or []) or 1, "image"
    if index is not None and not 1 <= index <= count:
        raise InputError(
            f"{FIELD} points at {noun} {index}; the parent has {count}.",
            field="index",
            details={"index": index, "count": count},
        )
    return parent


def video_seconds(task: Task) -> int:
    """How long the clips of the VIDEO ``task`` are: as recorded at its submit, else (a task
    accepted before lengths were recorded) counted along its chain of extensions."""
    seconds = 0
    current: Task | None = task
    for _ in range(VIDEO_MAX_SECONDS):  # bounded: a chain longer than the limit cannot exist
        if current is None:
            break
        params = current.params or {}
        recorded = params.get(VIDEO_SECONDS)
        if isinstance(recorded, int) and not isinstance(recorded, bool):
            return seconds + recorded
        if not is_extend(params):
            return seconds + VIDEO_CLIP_SECONDS
        seconds += VIDEO_EXTEND_SECONDS
        current = current.parent
    return seconds + VIDEO_CLIP_SECONDS


def is_extend(params: dict[str, Any]) -> bool:
    """Whether a VIDEO task's params extend a clip (our route's ``extend``, or an Extend press)."""
    return bool(params.get("extend")) or str(params.get("variant", "")).endswith("_extend")


def extension_params(video: Task, *, field: str) -> dict[str, Any]:
    """What an extension of ``video`` inherits: its resolution (an extension continues its
    frames) and its length plus ``VIDEO_EXTEND_SECONDS``. Refused (naming ``field``) when
    that would pass Midjourney's limit, before anything is held."""
    seconds = video_seconds(video)
    if not video_extendable(seconds):
        raise InputError(
            f"A video can be extended up to {VIDEO_MAX_SECONDS} seconds; this one is already "
            f"{seconds} s long, and an extension adds {VIDEO_EXTEND_SECONDS} s.",
            field=field,
            details={"video_seconds": seconds, "max_seconds": VIDEO_MAX_SECONDS},
        )
    return {
        RESOLUTION: (video.params or {}).get(RESOLUTION) or SD,
        VIDEO_SECONDS: seconds + VIDEO_EXTEND_SECONDS,
    }


def _index(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise InputError(
            f"{FIELD} must be a whole number (1-4); got '{value}'.", field="index"
        ) from None


def task_submit_video(
    *,
    caller: Caller,
    prompt: str = "",
    images: Sequence[Any] = (),
    parent_id: str | None = None,
    index: Any = None,
    extend: bool = False,
    motion: Any = None,
    batch_size: Any = None,
    loop: bool = False,
    resolution: Any = None,
    end_image: Any = None,
    mode: str | None = None,
    path_mode: str | None = None,
    echo: ClientEcho | None = None,
) -> SubmitOutcome:
    """Accept a VIDEO task.

    The clip starts from ``images[0]`` (a start frame: a data URL or an http(s) URL), or from
    the image of ``parent_id`` (its ``index``-th split for a grid); with ``extend`` it continues
    clip ``index`` of the video ``parent_id``. ``prompt`` guides the motion ("manual"); empty
    means automatic. Midjourney's ``--motion``, ``--bs``, ``--loop``, ``--end`` in the prompt
    count as the fields, which win when both are given. ``resolution`` is ``480p`` (SD,
    default; an extension keeps its video's) or ``720p`` (HD: FAST/TURBO only, its own price);
    ``end_image`` (or ``--end <url>``) is the image the clips end on.
    """
    echo = echo or ClientEcho()
    notify_hook = check_hook(echo.notify_hook)
    state = check_state(echo.state)
    text, flags = take_video_flags(prompt)
    chosen_motion = video_motion(motion if motion not in (None, "") else flags.get("motion"))
    size = video_batch_size(batch_size if batch_size not in (None, "") else flags.get("bs"))
    looping = bool(loop) or flags.get("loop") == "true"
    position = _index(index)
    if len(images) > 1:
        raise InputError(
            f"A video takes one start frame; {FIELD} has {len(images)}.",
            field="images",
            action=Action.VIDEO,
            details={"count": len(images)},
        )
    parent: Task | None = None
    if parent_id:
        if images:
            raise InputError(
                "Give either a start frame image or a parent task to animate, not both.",
                field="images",
            )
        parent = _video_parent(caller, parent_id, extend=extend, index=position)
    elif extend:
        raise InputError("Extending needs the video task to extend (its id).", field="parent")
    elif not images:
        raise InputError(
            "A video needs a start frame: one image, or a parent task to animate.",
            field="images",
            action=Action.VIDEO,
            details={"count": 0},
        )
    if looping and extend:
        raise InputError("A loop cannot be extended; extend without loop.", field="loop")
    if looping and (end_image not in (None, "") or flags.get("end")):
        raise InputError(
            f"A loop ends on its first frame; give either loop or an end frame ({FIELD}), "
            "not both.",
            field="end_image",
        )
    chosen_resolution = video_resolution(resolution)
    length = VIDEO_CLIP_SECONDS
    if extend and parent is not None:
        # An extension continues its video's frames, so it is made at that video's resolution.
        inherited = extension_params(parent, field="parent")
        made_at, length = inherited[RESOLUTION], inherited[VIDEO_SECONDS]
        if resolution not in (None, "") and chosen_resolution != made_at:
            raise InputError(
                f"An extension keeps its video's resolution ({made_at}); {FIELD} "
                f"{chosen_resolution} was asked for.",
                field="resolution",
                details={"resolution": chosen_resolution, "video_resolution": made_at},
            )
        chosen_resolution = made_at
    parsed = parse_checked(text) if text else None
    if parent is not None:
        # Like every follow-up, a video of a task runs in that task's mode.
        chosen_mode = parent.mode
        requested = mode if mode not in (None, "") else path_mode
        if (
            requested not in (None, "")
            and resolve_mode(requested=mode, path_mode=path_mode, flag=None) != parent.mode
        ):
            raise InputError(
                f"Follow-ups run in the parent's mode ({parent.mode}); {requested} was requested.",
                field="mode",
                details={"parent_mode": parent.mode},
            )
    else:
        chosen_mode = resolve_mode(
            requested=mode, path_mode=path_mode, flag=parsed.mode_flag if parsed else None
        )
    check_tier_mode(caller.organization, chosen_mode)
    _check_hd_mode(chosen_resolution, chosen_mode)
    pool = follow_up_pool(parent) if parent is not None else resolve_pool(caller, mode=chosen_mode)
    decoded = (
        [load_image(images[0], field="images", index=0, action=Action.VIDEO)] if images else []
    )
    end_frame = _end_frame(end_image, flags.get("end"))
    upstream = (
        prompt_for_upstream(organization=caller.organization, parsed=parsed) if parsed else None
    )
    seed = prompts.seed(parsed) if parsed is not None else None
    params: dict[str, Any] = {
        "variant": "extend" if extend else ("animate" if parent is not None else "start_frame"),
        "motion": chosen_motion,
        "batch_size": size,
        "loop": looping,
        "extend": extend,
        "manual": parsed is not None,
        RESOLUTION: chosen_resolution,
        VIDEO_SECONDS: length,
    }
    if parent is not None:
        params["index"] = position or 1
    # Image URLs in the prompt (--sref …) are fetched and re-hosted as every prompt's are.
    rehosted = rehost_prompt_urls(parsed, upstream.text) if parsed and upstream else None
    input_files: list[str] = []
    end_files: list[str] = []
    try:
        input_files = store_inputs(decoded)
        end_files = store_inputs([end_frame]) if end_frame is not None else []
    except BaseException:
        discard_files([*input_files, *(rehosted.files if rehosted else [])])
        raise
    references = dict(rehosted.references) if rehosted else {}
    if end_files:
        params[END_FRAME] = True
        references[END_REFERENCE] = end_files
    if references:
        params[REFERENCES] = references
    task = Task(
        organization=caller.organization,
        api_key=caller.api_key,
        created_by=caller.user,
        is_test=parent.is_test if parent is not None else caller.is_test,
        protocol=caller.protocol,
        action=Action.VIDEO,
        status=Status.NOT_START,
        mode=chosen_mode,
        pool=pool,
        parent=parent,
        prompt=(prompt or "").strip(),
        prompt_en=rehosted.text if rehosted else "",
        state=state,
        params=params,
        metadata=echo.metadata or {},
        inputs=input_files,
        notify_hook=notify_hook,
        seed=seed if seed is not None else new_seed(),
        properties=with_rehosted(upstream.properties, rehosted)
        if upstream
        else {"finalPrompt": ""},
    )
    files = [*input_files, *end_files, *(rehosted.files if rehosted else [])]
    return create_and_accept(task, input_files=files)
