"""The table of actions: what each action is, in one place (SPEC §4.3).

Every :class:`~apps.tasks.enums.Action` has one :class:`ActionSpec` row: how a new task of it is
validated (``inputs``; ``None`` when only a button starts it), what it costs (``price_key``),
which engine capability it needs, whether its result is a grid, which buttons its result
carries, and the buttons (:class:`PressSpec`) whose press starts a task of it — each with its
button-id pattern, the button ids it emits, whether it needs a second step (MODAL) and its names
in our own vocabulary (``U1``, ``VARY_SUBTLE`` …, which the native API and the dashboard show).

Adding an action is one row here, the engine code that renders it and, where a dialect has an
endpoint for it, that endpoint. The compatible dialects' own names for the buttons (mj-proxy's
``UPSCALE`` + index, TTAPI's action words) are *their* data: they live in
``apps/protocols/<dialect>/actions.py`` and map onto the ``key`` of a :class:`PressSpec`.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .enums import Action
from .errors import InputError

__all__ = [
    "ACTIONS",
    "PRESSES",
    "ActionSpec",
    "ButtonRef",
    "ByName",
    "BySpec",
    "Capability",
    "Inputs",
    "ModalStep",
    "PressSpec",
    "ResultButtons",
    "action_spec",
    "press_spec",
]


class Capability(StrEnum):
    """What an engine must be able to do to run an action (engines declare the ones they do)."""

    IMAGINE = "imagine"
    UPSCALE = "upscale"
    VARY = "vary"
    VARY_REGION = "vary_region"
    REROLL = "reroll"
    ZOOM = "zoom"
    CUSTOM_ZOOM = "custom_zoom"
    PAN = "pan"
    DESCRIBE = "describe"
    BLEND = "blend"
    SHORTEN = "shorten"
    SWAP_FACE = "swap_face"
    VIDEO = "video"
    EDIT = "edit"
    RETEXTURE = "retexture"


class ModalStep(StrEnum):
    """What the second step of a two-step (MODAL) button asks for."""

    #: Vary (Region): the area to change, and optionally a new prompt.
    MASK = "mask"
    #: Custom zoom: a prompt carrying ``--zoom`` (the parent's, with ``--zoom 2``, to start).
    ZOOM = "zoom"
    #: Use prompt *n* of a describe/shorten result, as is or edited.
    PROMPT = "prompt"
    #: Remix: a variation, reroll or pan asks for the (changed) prompt first.
    REMIX = "remix"
    #: Animate (Manual): the prompt that guides the motion (the image's prompt, to start).
    ANIMATE = "animate"


class ResultButtons(StrEnum):
    """Which buttons a successful task carries."""

    #: An image: the grid set (U1-U4, reroll, V1-V4) for a grid, the single-image set otherwise.
    IMAGE = "image"
    #: The four described prompts and "describe again".
    DESCRIBE = "describe"
    #: The five shortened prompts.
    SHORTEN = "shorten"
    #: Short MP4 clips: the extend buttons (high/low motion) of each clip of the batch.
    VIDEO = "video"
    NONE = "none"


@dataclass(frozen=True)
class Inputs:
    """What a new (non follow-up) task of an action takes, in domain words.

    Errors name the domain fields ``prompt``, ``images`` (``images[i]``) and ``dimensions``;
    each dialect renders them under its own names.
    """

    prompt: bool = False
    min_images: int = 0
    max_images: int = 0
    dimensions: bool = False
    #: A mask (white: the area to repaint) comes with the image (the editor).
    mask: bool = False
    #: What to say when the image count is wrong ({count} is the number received).
    count_message: str = ""


#: Numbered buttons go from 1 to ``len(indexes)``; ``None`` means the button has no number.
Indexes = tuple[int, ...] | None


@dataclass(frozen=True)
class PressSpec:
    """One kind of button: pressing it starts a task of ``action``.

    ``key`` is the stable domain name the dialects map their names to; it is also the
    ``variant`` stored on the task, which tells the engine what to render. ``names`` are our own
    names for it, the first being the one we show (``{n}`` is the number of a numbered button).
    """

    key: str
    action: str
    #: Matches the ids of this button (Midjourney's formats and known spellings).
    pattern: re.Pattern[str]
    #: The button id we emit (``{n}`` number, ``{hash}`` Midjourney job hash); "" if never emitted.
    emits: str = ""
    emoji: str = ""
    label: str = ""
    indexes: Indexes = None
    #: Out-of-range number: "points at {noun} {n}; {range}".
    index_noun: str = ""
    index_range: str = ""
    #: The press waits for a second step (``None``: it is queued at once).
    modal: ModalStep | None = None
    names: tuple[str, ...] = ()
    zoom_factor: float | None = None
    pan_direction: str | None = None
    #: Dashboard grouping and tooltip.
    group: str = "other"
    title: str = ""
    #: The task starts from the parent's own inputs (describe again, reroll).
    reuses_inputs: bool = False
    #: With remix on, the press opens a prompt step (``ModalStep.REMIX``) as Midjourney does.
    remixable: bool = False

    def custom_id(self, *, job_hash: str, index: int | None = None) -> str:
        return self.emits.format(n=index, hash=job_hash)

    def name(self, index: int | None) -> str:
        return self.names[0].format(n=index)

    def all_names(self, index: int | None) -> tuple[str, ...]:
        return tuple(name.format(n=index) for name in self.names)

    def shown_title(self, index: int | None, label: str) -> str:
        return self.title.format(n=index) if self.title else label


@dataclass(frozen=True)
class ActionSpec:
    """One row of the table: everything the domain knows about one action."""

    action: str
    price_key: str
    capability: Capability
    #: ``None``: only a button starts a task of this action.
    inputs: Inputs | None
    result_buttons: ResultButtons
    #: Midjourney shows the result as a 2x2 grid.
    grid: bool
    #: The buttons whose press starts a task of this action.
    presses: tuple[PressSpec, ...] = ()
    #: Non-zero: the price row is for a batch of this many results, and a task's price scales
    #: with its own ``batch_size`` (a video batch of 1 costs a quarter of a batch of 4).
    batch_price_of: int = 0

    def price_for(self, base: int, params: Mapping[str, object]) -> int:
        """The price of a task with ``params`` when the price row says ``base``."""
        if not self.batch_price_of:
            return base
        batch = params.get("batch_size") or self.batch_price_of
        size = batch if isinstance(batch, int) else self.batch_price_of
        # Rounded up: a batch never costs less than its share of the row.
        return -(-base * size // self.batch_price_of)

    @property
    def lists_prompts(self) -> bool:
        """The result is a numbered list of prompts (``1️⃣ …``), not an image."""
        return self.result_buttons in (ResultButtons.DESCRIBE, ResultButtons.SHORTEN)


_H = r"(?P<hash>[^:\s]+)"
_SOLO = r"(?:::SOLO)?"
_FOUR = (1, 2, 3, 4)
_FIVE = (1, 2, 3, 4, 5)
_PAN_EMOJI = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
PAN_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")


def _re(text: str) -> re.Pattern[str]:
    return re.compile(f"^{text}$")


UPSAMPLE = PressSpec(
    key="upsample",
    action=Action.UPSCALE,
    pattern=_re(rf"MJ::JOB::upsample::(?P<n>\d+)::{_H}{_SOLO}"),
    emits="MJ::JOB::upsample::{n}::{hash}",
    label="U{n}",
    indexes=_FOUR,
    index_noun="image",
    index_range="U buttons go from 1 to 4",
    names=("U{n}", "upscale{n}", "upscale_{n}", "upsample_{n}"),
    group="upscale",
)
VARIATION = PressSpec(
    key="variation",
    action=Action.VARIATION,
    pattern=_re(rf"MJ::JOB::variation::(?P<n>\d+)::{_H}{_SOLO}"),
    emits="MJ::JOB::variation::{n}::{hash}",
    label="V{n}",
    indexes=_FOUR,
    index_noun="image",
    index_range="V buttons go from 1 to 4",
    names=("V{n}", "variation_{n}"),
    group="variation",
    remixable=True,
)
REROLL = PressSpec(
    key="reroll",
    action=Action.REROLL,
    pattern=_re(rf"MJ::JOB::reroll::0::{_H}{_SOLO}"),
    emits="MJ::JOB::reroll::0::{hash}::SOLO",
    emoji="🔄",
    names=("REROLL", "r", "retry", "describe_retry", "picread_retry"),
    title="Reroll: run the same prompt again",
    reuses_inputs=True,
    remixable=True,
)
# v6 is what we emit; v5/v6r1/v7 spellings are what upstream accounts have produced.
_UPSCALE_ID = r"MJ::JOB::upsample_v[0-9a-z]+_"
UPSCALE_SUBTLE = PressSpec(
    key="subtle",
    action=Action.UPSCALE,
    pattern=_re(rf"{_UPSCALE_ID}[24]x_subtle::1::{_H}{_SOLO}"),
    emits="MJ::JOB::upsample_v6_2x_subtle::1::{hash}::SOLO",
    label="Upscale (Subtle)",
    names=("UPSCALE_SUBTLE",),
    group="upscale",
)
UPSCALE_CREATIVE = PressSpec(
    key="creative",
    action=Action.UPSCALE,
    pattern=_re(rf"{_UPSCALE_ID}[24]x_creative::1::{_H}{_SOLO}"),
    emits="MJ::JOB::upsample_v6_2x_creative::1::{hash}::SOLO",
    label="Upscale (Creative)",
    names=("UPSCALE_CREATIVE",),
    group="upscale",
)
UPSCALE_2X = PressSpec(
    key="2x",
    action=Action.UPSCALE,
    pattern=_re(rf"{_UPSCALE_ID}2x::1::{_H}{_SOLO}"),
    names=("UPSCALE_2X",),
    group="upscale",
)
UPSCALE_4X = PressSpec(
    key="4x",
    action=Action.UPSCALE,
    pattern=_re(rf"{_UPSCALE_ID}4x::1::{_H}{_SOLO}"),
    names=("UPSCALE_4X",),
    group="upscale",
)
VARY_SUBTLE = PressSpec(
    key="low",
    action=Action.VARIATION,
    pattern=_re(rf"MJ::JOB::low_variation::1::{_H}{_SOLO}"),
    emits="MJ::JOB::low_variation::1::{hash}::SOLO",
    emoji="🪄",
    label="Vary (Subtle)",
    names=("VARY_SUBTLE", "variation_subtle"),
    group="variation",
    remixable=True,
)
VARY_STRONG = PressSpec(
    key="high",
    action=Action.VARIATION,
    pattern=_re(rf"MJ::JOB::high_variation::1::{_H}{_SOLO}"),
    emits="MJ::JOB::high_variation::1::{hash}::SOLO",
    emoji="🪄",
    label="Vary (Strong)",
    names=("VARY_STRONG", "variation_strong"),
    group="variation",
    remixable=True,
)
VARY_REGION = PressSpec(
    key="inpaint",
    action=Action.VARIATION,
    pattern=_re(rf"MJ::Inpaint::1::{_H}{_SOLO}"),
    emits="MJ::Inpaint::1::{hash}::SOLO",
    emoji="🖌️",
    label="Vary (Region)",
    modal=ModalStep.MASK,
    names=("VARY_REGION", "variation_region"),
    group="variation",
)
ZOOM_2X = PressSpec(
    key="zoom_2x",
    action=Action.ZOOM,
    pattern=_re(rf"MJ::Outpaint::50::1::{_H}{_SOLO}"),
    emits="MJ::Outpaint::50::1::{hash}::SOLO",
    emoji="🔍",
    label="Zoom Out 2x",
    names=("ZOOM_2X",),
    zoom_factor=2.0,
    group="zoom",
)
ZOOM_1_5X = PressSpec(
    key="zoom_1_5x",
    action=Action.ZOOM,
    pattern=_re(rf"MJ::Outpaint::75::1::{_H}{_SOLO}"),
    emits="MJ::Outpaint::75::1::{hash}::SOLO",
    emoji="🔍",
    label="Zoom Out 1.5x",
    names=("ZOOM_1_5X",),
    zoom_factor=1.5,
    group="zoom",
)
CUSTOM_ZOOM = PressSpec(
    key="custom_zoom",
    action=Action.ZOOM,
    pattern=_re(rf"MJ::CustomZoom::{_H}"),
    emits="MJ::CustomZoom::{hash}",
    emoji="🔍",
    label="Custom Zoom",
    modal=ModalStep.ZOOM,
    names=("CUSTOM_ZOOM", "zoom_custom", "custom_zoom_out"),
    group="zoom",
)


def _pan(direction: str) -> PressSpec:
    return PressSpec(
        key=f"pan_{direction}",
        action=Action.PAN,
        pattern=_re(rf"MJ::JOB::pan_{direction}::1::{_H}{_SOLO}"),
        emits=f"MJ::JOB::pan_{direction}::1::{{hash}}::SOLO",
        emoji=_PAN_EMOJI[direction],
        names=(f"PAN_{direction.upper()}",),
        pan_direction=direction,
        group="pan",
        title=f"Pan {direction}",
        remixable=True,
    )


PAN_LEFT, PAN_RIGHT, PAN_UP, PAN_DOWN = (_pan(d) for d in PAN_DIRECTIONS)


def _animate(motion: str) -> PressSpec:
    """Animate (Low/High motion) on an upscale: Midjourney's automatic image-to-video."""
    return PressSpec(
        key=f"animate_{motion}",
        action=Action.VIDEO,
        # Midjourney numbers the button with the upscaled image's place; any number means it.
        pattern=_re(rf"MJ::JOB::animate_{motion}::\d+::{_H}{_SOLO}"),
        emits=f"MJ::JOB::animate_{motion}::1::{{hash}}::SOLO",
        emoji="🎞️",
        label=f"Animate ({motion.capitalize()} motion)",
        names=(f"ANIMATE_{motion.upper()}", f"animate_{motion}"),
        group="video",
        # With Remix on, Midjourney asks for the prompt first (its MJ::AnimateModal form).
        remixable=True,
    )


def _extend(motion: str) -> PressSpec:
    """Extend (Low/High motion) on clip *n* of a video: four more seconds from its last frame."""
    return PressSpec(
        key=f"animate_{motion}_extend",
        action=Action.VIDEO,
        pattern=_re(rf"MJ::JOB::animate_{motion}_extend::(?P<n>\d+)::{_H}{_SOLO}"),
        emits=f"MJ::JOB::animate_{motion}_extend::{{n}}::{{hash}}",
        emoji="🎞️",
        label=f"Extend ({motion.capitalize()} motion)",
        indexes=_FOUR,
        index_noun="video",
        index_range="a video batch holds at most 4 clips",
        names=(f"EXTEND_{motion.upper()}{{n}}", f"extend_{motion}_{{n}}"),
        group="video",
        title=f"Extend video {{n}} ({motion} motion)",
        remixable=True,
    )


def _animate_manual(motion: str) -> PressSpec:
    """Animate Manually (Low/High motion): the prompt is given in a second step first.

    Midjourney's web app offers "Animate Manually" beside the automatic buttons; on Discord the
    same press with Remix on opens the "MJ::AnimateModal::<hash>::<n>::<motion>::0" form
    (trueai-org/midjourney-proxy builds "MJ::AnimateModal::<hash>::<n>::<motion>::1" for the
    extend's, its last field marking an extension); we use that form's id for the button, so
    each distinct press has one Midjourney-shaped id.
    """
    return PressSpec(
        key=f"animate_{motion}_manual",
        action=Action.VIDEO,
        pattern=_re(rf"MJ::AnimateModal::{_H}::\d+::{motion}::0"),
        emits=f"MJ::AnimateModal::{{hash}}::1::{motion}::0",
        emoji="🎞️",
        label=f"Animate Manually ({motion.capitalize()} motion)",
        modal=ModalStep.ANIMATE,
        names=(
            f"ANIMATE_MANUAL_{motion.upper()}",
            f"animate_manual_{motion}",
            f"animate_{motion}_manual",
        ),
        group="video",
    )


ANIMATE_HIGH, ANIMATE_LOW = _animate("high"), _animate("low")
ANIMATE_MANUAL_HIGH, ANIMATE_MANUAL_LOW = _animate_manual("high"), _animate_manual("low")
EXTEND_HIGH, EXTEND_LOW = _extend("high"), _extend("low")
#: The motion of a video press (``animate_low`` … ``animate_high_extend``).
VIDEO_MOTIONS: tuple[str, ...] = ("low", "high")
#: Batch sizes Midjourney offers for video (``--bs``).
VIDEO_BATCH_SIZES: tuple[int, ...] = (1, 2, 4)
#: Midjourney's clip lengths: a new clip runs 5 s, an extension adds 4 s, up to 21 s in all.
VIDEO_CLIP_SECONDS = 5
VIDEO_EXTEND_SECONDS = 4
VIDEO_MAX_SECONDS = 21
#: A VIDEO task's params: how long its clips are once made, in seconds (a new clip's
#: ``VIDEO_CLIP_SECONDS``, an extension its video's plus ``VIDEO_EXTEND_SECONDS``).
VIDEO_SECONDS = "seconds"


def video_extendable(seconds: int) -> bool:
    """Whether a clip ``seconds`` long can be extended once more without passing the limit."""
    return seconds + VIDEO_EXTEND_SECONDS <= VIDEO_MAX_SECONDS


DESCRIBED_PROMPT = PressSpec(
    key="picreader",
    action=Action.IMAGINE,
    pattern=_re(r"MJ::Job::PicReader::(?P<n>\d+)"),
    emits="MJ::Job::PicReader::{n}",
    emoji="{n}\ufe0f\u20e3",
    indexes=_FOUR,
    index_noun="described prompt",
    index_range="there are 4",
    modal=ModalStep.PROMPT,
    names=("DESCRIBE{n}", "describe_{n}", "picreader{n}"),
    group="prompt",
    title="Imagine prompt {n}",
)
DESCRIBE_AGAIN = PressSpec(
    key="picread_retry",
    action=Action.DESCRIBE,
    pattern=_re(r"MJ::Picread::Retry"),
    emits="MJ::Picread::Retry",
    emoji="🔄",
    names=("REROLL", "r", "retry", "describe_retry", "picread_retry"),
    title="Describe again",
    reuses_inputs=True,
)
SHORTENED_PROMPT = PressSpec(
    key="prompt_analyzer",
    action=Action.IMAGINE,
    pattern=_re(r"MJ::Job::PromptAnalyzer::(?P<n>\d+)"),
    emits="MJ::Job::PromptAnalyzer::{n}",
    emoji="{n}\ufe0f\u20e3",
    indexes=_FIVE,
    index_noun="shortened prompt",
    index_range="there are 5",
    modal=ModalStep.PROMPT,
    names=("SHORTEN{n}", "shorten_{n}", "prompt_analyzer{n}"),
    group="prompt",
    title="Imagine prompt {n}",
)

#: Every action, once. ``tests/tasks/test_actions.py`` checks the table covers the enum.
ACTIONS: Mapping[str, ActionSpec] = {
    spec.action: spec
    for spec in (
        ActionSpec(
            action=Action.IMAGINE,
            price_key=Action.IMAGINE,
            capability=Capability.IMAGINE,
            inputs=Inputs(
                prompt=True,
                max_images=5,
                count_message="{field} may contain at most 5 reference images; got {count}.",
            ),
            result_buttons=ResultButtons.IMAGE,
            grid=True,
            presses=(DESCRIBED_PROMPT, SHORTENED_PROMPT),
        ),
        ActionSpec(
            action=Action.UPSCALE,
            price_key=Action.UPSCALE,
            capability=Capability.UPSCALE,
            inputs=None,
            result_buttons=ResultButtons.IMAGE,
            grid=False,
            presses=(UPSAMPLE, UPSCALE_SUBTLE, UPSCALE_CREATIVE, UPSCALE_2X, UPSCALE_4X),
        ),
        ActionSpec(
            action=Action.VARIATION,
            price_key=Action.VARIATION,
            capability=Capability.VARY,
            inputs=None,
            result_buttons=ResultButtons.IMAGE,
            grid=True,
            presses=(VARIATION, VARY_SUBTLE, VARY_STRONG, VARY_REGION),
        ),
        ActionSpec(
            action=Action.REROLL,
            price_key=Action.REROLL,
            capability=Capability.REROLL,
            inputs=None,
            result_buttons=ResultButtons.IMAGE,
            grid=True,
            presses=(REROLL,),
        ),
        ActionSpec(
            action=Action.ZOOM,
            price_key=Action.ZOOM,
            capability=Capability.ZOOM,
            inputs=None,
            result_buttons=ResultButtons.IMAGE,
            grid=True,
            presses=(ZOOM_2X, ZOOM_1_5X, CUSTOM_ZOOM),
        ),
        ActionSpec(
            action=Action.PAN,
            price_key=Action.PAN,
            capability=Capability.PAN,
            inputs=None,
            result_buttons=ResultButtons.IMAGE,
            grid=True,
            presses=(PAN_LEFT, PAN_RIGHT, PAN_UP, PAN_DOWN),
        ),
        ActionSpec(
            action=Action.DESCRIBE,
            price_key=Action.DESCRIBE,
            capability=Capability.DESCRIBE,
            inputs=Inputs(
                min_images=1, max_images=1, count_message="Describe needs exactly one image."
            ),
            result_buttons=ResultButtons.DESCRIBE,
            grid=False,
            presses=(DESCRIBE_AGAIN,),
        ),
        ActionSpec(
            action=Action.BLEND,
            price_key=Action.BLEND,
            capability=Capability.BLEND,
            inputs=Inputs(
                min_images=2,
                max_images=5,
                dimensions=True,
                count_message="{field} must contain between 2 and 5 images; got {count}.",
            ),
            result_buttons=ResultButtons.IMAGE,
            grid=True,
        ),
        ActionSpec(
            action=Action.SHORTEN,
            price_key=Action.SHORTEN,
            capability=Capability.SHORTEN,
            inputs=Inputs(prompt=True),
            result_buttons=ResultButtons.SHORTEN,
            grid=False,
        ),
        ActionSpec(
            action=Action.SWAP_FACE,
            price_key=Action.SWAP_FACE,
            capability=Capability.SWAP_FACE,
            inputs=Inputs(
                min_images=2,
                max_images=2,
                count_message="Face swap needs a source and a target image.",
            ),
            result_buttons=ResultButtons.NONE,
            grid=False,
        ),
        ActionSpec(
            action=Action.VIDEO,
            price_key=Action.VIDEO,
            capability=Capability.VIDEO,
            # A new video takes its start frame; the prompt is optional (automatic animation).
            # The rest (motion, batch size, loop, a parent to animate or extend) is
            # apps/tasks/services/video.py's.
            inputs=Inputs(
                min_images=1, max_images=1, count_message="A video needs one start frame image."
            ),
            result_buttons=ResultButtons.VIDEO,
            grid=False,
            presses=(
                ANIMATE_HIGH,
                ANIMATE_LOW,
                ANIMATE_MANUAL_HIGH,
                ANIMATE_MANUAL_LOW,
                EXTEND_HIGH,
                EXTEND_LOW,
            ),
            batch_price_of=4,
        ),
        ActionSpec(
            action=Action.EDIT,
            price_key=Action.EDIT,
            capability=Capability.EDIT,
            inputs=Inputs(
                prompt=True,
                min_images=1,
                max_images=1,
                mask=True,
                count_message="The editor needs exactly one image to edit.",
            ),
            result_buttons=ResultButtons.IMAGE,
            grid=True,
        ),
        ActionSpec(
            action=Action.RETEXTURE,
            price_key=Action.RETEXTURE,
            capability=Capability.RETEXTURE,
            inputs=Inputs(
                prompt=True,
                min_images=1,
                max_images=1,
                count_message="Retexture needs exactly one image.",
            ),
            result_buttons=ResultButtons.IMAGE,
            grid=True,
        ),
    )
}

#: Every kind of button, by key.
PRESSES: Mapping[str, PressSpec] = {
    press.key: press for spec in ACTIONS.values() for press in spec.presses
}

#: The actions a client can start without a parent, in the order the API documents them.
NEW_TASK_ACTIONS: tuple[str, ...] = tuple(a for a, s in ACTIONS.items() if s.inputs is not None)

#: The buttons each kind of result carries, in Midjourney's order (press, number).
_GRID_SET: tuple[tuple[PressSpec, int | None], ...] = (
    *((UPSAMPLE, n) for n in _FOUR),
    (REROLL, None),
    *((VARIATION, n) for n in _FOUR),
)
_SINGLE_SET: tuple[tuple[PressSpec, int | None], ...] = (
    (UPSCALE_SUBTLE, None),
    (UPSCALE_CREATIVE, None),
    (VARY_SUBTLE, None),
    (VARY_STRONG, None),
    (VARY_REGION, None),
    (ZOOM_2X, None),
    (ZOOM_1_5X, None),
    (CUSTOM_ZOOM, None),
    (PAN_LEFT, None),
    (PAN_RIGHT, None),
    (PAN_UP, None),
    (PAN_DOWN, None),
    (ANIMATE_HIGH, None),
    (ANIMATE_LOW, None),
    (REROLL, None),
)
#: Presses Midjourney offers beside a button that have no button of their own on Discord: the
#: web app's "Animate Manually" next to "Animate". A task that has the button (key) can be
#: pressed these ways too; its stored buttons stay Discord's, exactly as Midjourney sends them.
IMPLIED_PRESSES: Mapping[str, tuple[PressSpec, ...]] = {
    ANIMATE_HIGH.key: (ANIMATE_MANUAL_HIGH,),
    ANIMATE_LOW.key: (ANIMATE_MANUAL_LOW,),
}
#: A video's buttons: extend each clip (the lifecycle keeps those of the clips it has).
_VIDEO_SET: tuple[tuple[PressSpec, int | None], ...] = tuple(
    pair for n in _FOUR for pair in ((EXTEND_HIGH, n), (EXTEND_LOW, n))
)
_DESCRIBE_SET: tuple[tuple[PressSpec, int | None], ...] = (
    *((DESCRIBED_PROMPT, n) for n in _FOUR),
    (DESCRIBE_AGAIN, None),
)
_SHORTEN_SET: tuple[tuple[PressSpec, int | None], ...] = tuple((SHORTENED_PROMPT, n) for n in _FIVE)


def action_spec(action: str) -> ActionSpec:
    """The row of ``action``; ``KeyError`` for an action the table does not know."""
    return ACTIONS[action]


def press_spec(key: str) -> PressSpec:
    """The button kind called ``key`` (``upsample``, ``low``, ``pan_left`` …)."""
    return PRESSES[key]


def result_button_set(action: str, *, is_grid: bool) -> tuple[tuple[PressSpec, int | None], ...]:
    """The (button kind, number) pairs a successful task of ``action`` carries."""
    kind = action_spec(action).result_buttons
    if kind == ResultButtons.DESCRIBE:
        return _DESCRIBE_SET
    if kind == ResultButtons.SHORTEN:
        return _SHORTEN_SET
    if kind == ResultButtons.NONE:
        return ()
    if kind == ResultButtons.VIDEO:
        return _VIDEO_SET
    return _GRID_SET if is_grid else _SINGLE_SET


#: A few button ids have a known shape but an impossible value; they get a precise message.
_OUTPAINT_ANY = _re(rf"MJ::Outpaint::(?P<pct>\d+)::1::{_H}{_SOLO}")


def unknown_shape_message(custom_id: str, shown: str) -> str | None:
    """A precise complaint for a button id of a known shape with an impossible value."""
    match = _OUTPAINT_ANY.match(custom_id)
    if match is not None:
        return (
            f"Button {shown!r} asks for an outpaint of {int(match['pct'])}; "
            "only 50 (zoom out 2x) and 75 (zoom out 1.5x) exist."
        )
    return None


# --- choosing a button on a parent -----------------------------------------------------------


class ButtonRef:
    """How a caller designates one of a parent's buttons; :func:`task_press` resolves it."""

    def shown(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class ByName(ButtonRef):
    """A button by a name: a raw button id, one of our names (``U1``, ``VARY_SUBTLE``), a label,
    or — through ``extra_names`` — a dialect's own names for a resolved button."""

    name: str
    extra_names: Callable[[PressSpec, int | None], Iterable[str]] | None = field(
        default=None, compare=False
    )
    #: An error lists the buttons on offer under the dialect's names (``extra_names``' first),
    #: for a dialect whose clients know only those.
    offer_extra_names: bool = False

    def shown(self) -> str:
        return self.name


@dataclass(frozen=True)
class BySpec(ButtonRef):
    """A button by its kind and number (``BySpec(press_spec("upsample"), 2)`` is U2)."""

    press: PressSpec
    index: int | None = None

    def shown(self) -> str:
        return self.press.name(self.index)


def label_key(name: str) -> str:
    """One spelling for a name: "Vary (Subtle)", "vary-subtle" and "VARY_SUBTLE" all match."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def names_key_set(names: Iterable[str]) -> set[str]:
    return {label_key(n) for n in names if n}


def check_index(press: PressSpec, index: int | None, *, shown: str) -> None:
    """A numbered button's number must be one the button has."""
    if press.indexes is None:
        return
    if index is None or index not in press.indexes:
        raise InputError(
            f"Button {shown!r} points at {press.index_noun} {index}; {press.index_range}.",
            field="button",
            details={"button": shown},
        )
