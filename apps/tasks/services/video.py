"""Accepting a VIDEO task: animate a start frame, an image of a finished task, or extend a clip.

Midjourney's video model (V1) makes a batch of short clips from one image: automatically (no
prompt) or guided by a prompt ("manual"), with low or high motion, optionally looping back to
its first frame; a clip is then extended four seconds at a time. Every dialect reaches it
through :func:`task_submit_video` (the upscale buttons "Animate (High/Low motion)" and a
video's "Extend" buttons go through ``task_press`` like any button, and land in the same
engine code). Errors name domain fields: ``motion``, ``batch_size``, ``images``, ``parent``,
``index``, ``prompt``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from apps.core.errors import NotFound

from .. import prompt as prompts
from ..actions import VIDEO_BATCH_SIZES, VIDEO_MOTIONS
from ..enums import Action, Status
from ..errors import FIELD, InputError, ParentNotFound
from ..models import Task
from ..selectors import task_get
from .acceptance import SubmitOutcome, create_and_accept, new_seed
from .inputs import (
    Caller,
    ClientEcho,
    check_hook,
    check_state,
    check_tier_mode,
    follow_up_pool,
    load_image,
    parse_checked,
    resolve_mode,
    resolve_pool,
    store_inputs,
)
from .translation import prompt_for_upstream

DEFAULT_BATCH_SIZE = 4
DEFAULT_MOTION = "low"
#: Midjourney's video parameters, written in a prompt as in Discord; they become fields.
_FLAG_RE = re.compile(
    r"(?:^|\s)--(?P<name>motion|bs|batch|loop|video)(?:\s+(?P<value>(?!--)\S+))?",
    re.IGNORECASE,
)


def _flags(prompt: str) -> tuple[str, dict[str, str]]:
    """Take ``--motion``, ``--bs``, ``--loop`` and ``--video`` out of ``prompt``."""
    found: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        name = match["name"].lower()
        value = match["value"] or ""
        if name == "loop" or name == "video":
            found[name] = "true"
            # A value after --loop/--video is the prompt's next word, not the flag's.
            return f" {value}" if value else ""
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
    mode: str | None = None,
    path_mode: str | None = None,
    echo: ClientEcho | None = None,
) -> SubmitOutcome:
    """Accept a VIDEO task.

    The clip starts from ``images[0]`` (a start frame: a data URL or an http(s) URL), or from
    the image of ``parent_id`` (its ``index``-th split for a grid); with ``extend`` it continues
    clip ``index`` of the video ``parent_id``. ``prompt`` guides the motion ("manual"); empty
    means automatic. Midjourney's ``--motion``, ``--bs``, ``--loop`` in the prompt count as the
    fields, which win when both are given.
    """
    echo = echo or ClientEcho()
    notify_hook = check_hook(echo.notify_hook)
    state = check_state(echo.state)
    text, flags = _flags(prompt)
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
    pool = follow_up_pool(parent) if parent is not None else resolve_pool(caller, mode=chosen_mode)
    decoded = (
        [load_image(images[0], field="images", index=0, action=Action.VIDEO)] if images else []
    )
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
    }
    if parent is not None:
        params["index"] = position or 1
    input_files = store_inputs(decoded)
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
        prompt_en=upstream.text if upstream else "",
        state=state,
        params=params,
        metadata=echo.metadata or {},
        inputs=input_files,
        notify_hook=notify_hook,
        seed=seed if seed is not None else new_seed(),
        properties=upstream.properties if upstream else {"finalPrompt": ""},
    )
    return create_and_accept(task, input_files=input_files)
