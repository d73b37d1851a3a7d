"""Midjourney's video on Discord: which interaction starts a VIDEO task, and what it sends.

How the bot does video (sources: Midjourney's video documentation, docs.midjourney.com/docs/video
— parameters ``--motion low|high``, ``--loop``, ``--end``, ``--bs``; trueai-org/midjourney-proxy,
which drives video through Discord: ``TaskService.SubmitVideo`` appends ``--video 1`` to an
``/imagine`` with the start frame's link, ``CustomComponentModel.CreateAnimateButtons`` and
``TaskInfo.SetVideoUpscaleButtons``/``SetVideoExtendButtons`` give the button ids, and
``DiscordService`` answers the ``MJ::AnimateModal::…`` form Remix mode opens):

* **From a start frame**: ``/imagine <frame link> [prompt] --video 1 --motion low|high
  [--bs 1|2] [--loop]`` — the prompt guides the motion ("manual"), none is automatic.
* **Animate an upscale**: its ``MJ::JOB::animate_high|low::1::<hash>::SOLO`` button (automatic,
  a batch of four; with the user's Remix mode on the bot first opens the ``MJ::AnimateModal``
  form, prefilled with the job's prompt).
* **The result** is one message with an MP4 (the batch side by side) and a ``U<n>`` button per
  clip (``MJ::JOB::video_virtual_upscale::<n>::<hash>``); pressing one posts clip *n* alone
  ("Video #n", its MP4) with ``MJ::JOB::animate_high|low_extend::1::<hash>`` (Extend) buttons.
  The engine presses them for every clip of the batch: that is how the clips (and the messages
  their Extend buttons live on) are had.
* **Extend** clip *n*: that clip message's Extend button (a new batch of four, four seconds
  longer); a prompt for it can only be given through the Remix form.

Pure functions over the frozen ``Job``: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.engines.base import Job, PermanentEngineError
from apps.tasks.enums import ErrorCode

#: Any hash: a button id is matched on its shape (``wire.signature``), not on the job it is on.
ANY_HASH = "00000000-0000-0000-0000-000000000000"
#: The bot's batch without ``--bs``; its Animate and Extend buttons always make one this big.
BUTTON_BATCH = 4
ANIMATE_MODAL = "MJ::AnimateModal::"

IMAGINE = "imagine"
ANIMATE = "animate"
EXTEND = "extend"


@dataclass(frozen=True)
class VideoPlan:
    """A VIDEO job as Discord interactions: which route, and its parameters."""

    route: str
    motion: str
    batch: int
    loop: bool
    #: A prompt guides the motion (else the bot animates on its own).
    manual: bool
    #: The parent's image (a grid's split) or clip this job starts from, 1-based.
    index: int

    def animate_button(self) -> str:
        return f"MJ::JOB::animate_{self.motion}::1::{ANY_HASH}::SOLO"

    def extend_button(self) -> str:
        return f"MJ::JOB::animate_{self.motion}_extend::1::{ANY_HASH}"


def _invalid(message: str) -> PermanentEngineError:
    return PermanentEngineError(message, error_code=ErrorCode.INVALID_PARAMETER)


def _offers(buttons: Any, prefix: str) -> bool:
    return any(str(b.get("custom_id", "")).startswith(prefix) for b in buttons or [])


def plan(job: Job) -> VideoPlan:
    """The route of a VIDEO job (domain params of ``apps.tasks.services.video`` or of an
    Animate/Extend press, whose ``variant`` carries the motion)."""
    params = job.params
    variant = str(params.get("variant") or "")
    motion = str(params.get("motion") or ("high" if "_high" in f"_{variant}" else "low"))
    if motion not in ("low", "high"):
        raise _invalid(f"Unknown video motion '{motion}'.")
    try:
        batch = int(params.get("batch_size") or BUTTON_BATCH)
        index = max(1, int(params.get("index") or 1))
    except (TypeError, ValueError):
        raise _invalid("The video's batch size and index must be whole numbers.") from None
    if batch not in (1, 2, 4):
        raise _invalid(f"A video batch holds 1, 2 or 4 clips; got {batch}.")
    loop = bool(params.get("loop"))
    manual = bool(params.get("manual"))
    extend = bool(params.get("extend")) or variant.endswith("_extend")
    parent = job.parent
    if extend:
        if parent is None:
            raise _invalid("Extending needs the video task.")
        if batch != BUTTON_BATCH:
            raise PermanentEngineError(
                "On Discord a clip is extended with its Extend button, which always makes a "
                f"batch of {BUTTON_BATCH}; extend with batch size {BUTTON_BATCH}, or run it on the "
                "sandbox or a midjourney-proxy Plus upstream.",
                error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
            )
        route = EXTEND
    elif job.images:
        route = IMAGINE
    elif parent is not None:
        # The Animate button is automatic and makes a batch of four that does not loop; any
        # other wish goes through /imagine with the parent's image as the start frame.
        prefix = f"MJ::JOB::animate_{motion}::"
        pressable = (
            not manual
            and batch == BUTTON_BATCH
            and not loop
            and _offers(parent.state.get("buttons"), prefix)
        )
        route = ANIMATE if pressable else IMAGINE
    else:
        raise _invalid("A video needs a start frame: an image, or a parent task with one.")
    return VideoPlan(route=route, motion=motion, batch=batch, loop=loop, manual=manual, index=index)


def start_frame(job: Job, video: VideoPlan) -> bytes:
    """The image an /imagine video starts from: the uploaded frame, or the parent's image."""
    if job.images:
        return job.images[0].read()
    parent = job.parent
    if parent is None or parent.grid is None:
        raise _invalid("A video needs a start frame: an image, or a parent task with one.")
    if parent.splits:
        if video.index > len(parent.splits):
            raise _invalid(f"The parent grid has no image {video.index}.")
        return parent.splits[video.index - 1].read()
    return parent.grid.read()


def imagine_prompt(frame_url: str, text: str, video: VideoPlan) -> str:
    """``/imagine``'s prompt: the frame's link, the guiding text, Midjourney's video flags."""
    parts = [frame_url, text.strip(), "--video 1", f"--motion {video.motion}"]
    if video.batch != BUTTON_BATCH:
        parts.append(f"--bs {video.batch}")
    if video.loop:
        parts.append("--loop")
    return " ".join(part for part in parts if part)


def clip_message(parent_state: Any, video: VideoPlan) -> dict[str, Any]:
    """The parent video's message of clip ``video.index`` (its Extend buttons live there)."""
    clips = list(parent_state.get("clips") or [])
    if not clips:
        raise _invalid("Only a video made on Discord can be extended here; the parent has no clip.")
    if video.index > len(clips):
        raise _invalid(f"The parent video has no clip {video.index}; it has {len(clips)}.")
    return dict(clips[video.index - 1])


def is_animate_form(modal: Any) -> bool:
    return str((modal or {}).get("custom_id") or "").startswith(ANIMATE_MODAL)
