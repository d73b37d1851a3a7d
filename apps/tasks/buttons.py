"""Midjourney's buttons and the follow-up actions they trigger (SPEC §4.3).

customIds use Midjourney's own formats byte for byte, because midjourney-proxy clients match
substrings of them (``"upsample::"`` in the id means "show as U button"). Three directions are
covered here:

* ``buttons_for`` — which buttons a finished task carries;
* ``resolve_custom_id`` — what pressing a customId does (action, index, zoom, pan, modal);
* ``resolve_alias`` / ``ttapi_component_name`` — the friendly names of the native API
  (``U1``, ``VARY_SUBTLE`` …) and TTAPI's action names (``upsample1``, ``outpaint_2x`` …),
  always checked against the buttons the task actually offers.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apps.core.errors import ValidationFailed
from apps.tasks.enums import Action

__all__ = [
    "PAN_DIRECTIONS",
    "Button",
    "ButtonAction",
    "buttons_for",
    "friendly_name",
    "resolve_alias",
    "resolve_custom_id",
    "ttapi_component_name",
    "ttapi_components",
]

BUTTON_TYPE = 2
#: Discord's grey "secondary" style. Midjourney shows every result button in it; the green
#: style 3 appears only in /settings toggles, which we do not model.
STYLE_SECONDARY = 2
STYLE_SUCCESS = 3

PAN_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
_PAN_EMOJI = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
_NUMBER_EMOJI = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")

# Outpaint percentage in the customId → how far the camera zooms out.
_OUTPAINT_ZOOM: dict[int, float] = {50: 2.0, 75: 1.5}

#: Actions whose result is a 2x2 grid in Midjourney.
GRID_ACTIONS: frozenset[str] = frozenset(
    {Action.IMAGINE, Action.VARIATION, Action.REROLL, Action.BLEND, Action.ZOOM, Action.PAN}
)


@dataclass(frozen=True)
class Button:
    custom_id: str
    emoji: str
    label: str
    type: int = BUTTON_TYPE
    style: int = STYLE_SECONDARY

    def as_dict(self) -> dict[str, str | int]:
        return {
            "customId": self.custom_id,
            "emoji": self.emoji,
            "label": self.label,
            "type": self.type,
            "style": self.style,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Button:
        """Inverse of ``as_dict``, tolerant of the missing keys some upstreams omit."""
        return cls(
            custom_id=str(data["customId"]),
            emoji=str(data.get("emoji") or ""),
            label=str(data.get("label") or ""),
            type=int(data.get("type") or BUTTON_TYPE),
            style=int(data.get("style") or STYLE_SECONDARY),
        )


@dataclass(frozen=True)
class ButtonAction:
    """What pressing a button does."""

    action: str
    #: The grid image (1-4) or the numbered prompt (1-4 describe, 1-5 shorten); ``None`` for
    #: buttons that act on a whole image.
    index: int | None
    #: Which flavour of ``action``: ``upsample``, ``variation``, ``reroll``, ``subtle``,
    #: ``creative``, ``low``, ``high``, ``inpaint``, ``zoom_2x``, ``zoom_1_5x``,
    #: ``custom_zoom``, ``pan_left`` …, ``picreader``, ``picread_retry``, ``prompt_analyzer``.
    variant: str
    zoom_factor: float | None = None
    pan_direction: str | None = None
    #: The action needs a second step (``/submit/modal``: mask or prompt) before it is queued.
    requires_modal: bool = False
    #: Midjourney job hash embedded in the customId, if the format carries one.
    job_hash: str | None = None
    custom_id: str = ""


# --- building buttons ------------------------------------------------------------------------


def _grid_buttons(job_hash: str) -> list[Button]:
    return [
        *(Button(f"MJ::JOB::upsample::{n}::{job_hash}", "", f"U{n}") for n in range(1, 5)),
        Button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", "🔄", ""),
        *(Button(f"MJ::JOB::variation::{n}::{job_hash}", "", f"V{n}") for n in range(1, 5)),
    ]


def _upscale_buttons(job_hash: str) -> list[Button]:
    return [
        Button(f"MJ::JOB::upsample_v6_2x_subtle::1::{job_hash}::SOLO", "", "Upscale (Subtle)"),
        Button(f"MJ::JOB::upsample_v6_2x_creative::1::{job_hash}::SOLO", "", "Upscale (Creative)"),
        Button(f"MJ::JOB::low_variation::1::{job_hash}::SOLO", "🪄", "Vary (Subtle)"),
        Button(f"MJ::JOB::high_variation::1::{job_hash}::SOLO", "🪄", "Vary (Strong)"),
        Button(f"MJ::Inpaint::1::{job_hash}::SOLO", "🖌️", "Vary (Region)"),
        Button(f"MJ::Outpaint::50::1::{job_hash}::SOLO", "🔍", "Zoom Out 2x"),
        Button(f"MJ::Outpaint::75::1::{job_hash}::SOLO", "🔍", "Zoom Out 1.5x"),
        Button(f"MJ::CustomZoom::{job_hash}", "🔍", "Custom Zoom"),
        *(
            Button(f"MJ::JOB::pan_{d}::1::{job_hash}::SOLO", _PAN_EMOJI[d], "")
            for d in PAN_DIRECTIONS
        ),
        Button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", "🔄", ""),
    ]


def _describe_buttons() -> list[Button]:
    return [
        *(Button(f"MJ::Job::PicReader::{n}", _NUMBER_EMOJI[n - 1], "") for n in range(1, 5)),
        Button("MJ::Picread::Retry", "🔄", ""),
    ]


def _shorten_buttons() -> list[Button]:
    return [Button(f"MJ::Job::PromptAnalyzer::{n}", _NUMBER_EMOJI[n - 1], "") for n in range(1, 6)]


_HASH_RE = re.compile(r"^[^:\s]+$")


def buttons_for(action: str, *, job_hash: str, is_grid: bool) -> list[Button]:
    """The buttons Midjourney attaches to a successful task of ``action``.

    ``is_grid`` selects grid buttons (U1-U4, reroll, V1-V4) or single-image buttons (upscale,
    vary, zoom, pan) for image actions; DESCRIBE, SHORTEN and SWAP_FACE ignore it. Raises
    ``ValueError`` for a malformed hash or an unknown action: both are programming errors.
    """
    if action == Action.DESCRIBE:
        return _describe_buttons()
    if action == Action.SHORTEN:
        return _shorten_buttons()
    if action == Action.SWAP_FACE:
        return []
    if action not in Action.values:
        raise ValueError(f"unknown action {action!r}")
    if not _HASH_RE.match(job_hash or ""):
        raise ValueError(f"job hash {job_hash!r} cannot be embedded in a customId")
    return _grid_buttons(job_hash) if is_grid else _upscale_buttons(job_hash)


# --- customId → action -----------------------------------------------------------------------

_H = r"(?P<hash>[^:\s]+)"
_SOLO = r"(?:::SOLO)?"


def _grid_index(kind: str, label: str) -> Callable[[re.Match[str]], ButtonAction]:
    action = Action.UPSCALE if kind == "upsample" else Action.VARIATION

    def build(match: re.Match[str]) -> ButtonAction:
        index = int(match["n"])
        if not 1 <= index <= 4:
            raise ValidationFailed(
                f"customId {match[0]!r} points at image {index}; {label} buttons go from 1 to 4.",
                details={"customId": match[0]},
            )
        return ButtonAction(action, index, kind, job_hash=match["hash"], custom_id=match[0])

    return build


def _upscale(match: re.Match[str]) -> ButtonAction:
    variant = match["flavour"] or match["scale"]
    return ButtonAction(Action.UPSCALE, None, variant, job_hash=match["hash"], custom_id=match[0])


def _outpaint(match: re.Match[str]) -> ButtonAction:
    percent = int(match["pct"])
    factor = _OUTPAINT_ZOOM.get(percent)
    if factor is None:
        raise ValidationFailed(
            f"customId {match[0]!r} asks for an outpaint of {percent}; "
            "only 50 (zoom out 2x) and 75 (zoom out 1.5x) exist.",
            details={"customId": match[0]},
        )
    variant = "zoom_2x" if factor == 2.0 else "zoom_1_5x"
    return ButtonAction(
        Action.ZOOM, None, variant, zoom_factor=factor, job_hash=match["hash"], custom_id=match[0]
    )


def _numbered(
    action: str, variant: str, highest: int, what: str
) -> Callable[[re.Match[str]], ButtonAction]:
    def build(match: re.Match[str]) -> ButtonAction:
        index = int(match["n"])
        if not 1 <= index <= highest:
            raise ValidationFailed(
                f"customId {match[0]!r} points at {what} {index}; there are {highest}.",
                details={"customId": match[0]},
            )
        return ButtonAction(action, index, variant, requires_modal=True, custom_id=match[0])

    return build


_CUSTOM_ID_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], ButtonAction]], ...] = (
    (re.compile(rf"^MJ::JOB::upsample::(?P<n>\d+)::{_H}{_SOLO}$"), _grid_index("upsample", "U")),
    (re.compile(rf"^MJ::JOB::variation::(?P<n>\d+)::{_H}{_SOLO}$"), _grid_index("variation", "V")),
    (
        re.compile(rf"^MJ::JOB::reroll::0::{_H}{_SOLO}$"),
        lambda m: ButtonAction(Action.REROLL, None, "reroll", job_hash=m["hash"], custom_id=m[0]),
    ),
    # v6 is what we emit; v5/v6r1/v7 spellings are what upstream accounts have produced.
    (
        re.compile(
            r"^MJ::JOB::upsample_v[0-9a-z]+_(?P<scale>[24]x)(?:_(?P<flavour>subtle|creative))?"
            rf"::1::{_H}{_SOLO}$"
        ),
        _upscale,
    ),
    (
        re.compile(rf"^MJ::JOB::(?P<level>low|high)_variation::1::{_H}{_SOLO}$"),
        lambda m: ButtonAction(
            Action.VARIATION, None, m["level"], job_hash=m["hash"], custom_id=m[0]
        ),
    ),
    (
        re.compile(rf"^MJ::Inpaint::1::{_H}{_SOLO}$"),
        lambda m: ButtonAction(
            Action.VARIATION,
            None,
            "inpaint",
            requires_modal=True,
            job_hash=m["hash"],
            custom_id=m[0],
        ),
    ),
    (re.compile(rf"^MJ::Outpaint::(?P<pct>\d+)::1::{_H}{_SOLO}$"), _outpaint),
    (
        re.compile(rf"^MJ::CustomZoom::{_H}$"),
        lambda m: ButtonAction(
            Action.ZOOM,
            None,
            "custom_zoom",
            requires_modal=True,
            job_hash=m["hash"],
            custom_id=m[0],
        ),
    ),
    (
        re.compile(rf"^MJ::JOB::pan_(?P<dir>left|right|up|down)::1::{_H}{_SOLO}$"),
        lambda m: ButtonAction(
            Action.PAN,
            None,
            f"pan_{m['dir']}",
            pan_direction=m["dir"],
            job_hash=m["hash"],
            custom_id=m[0],
        ),
    ),
    (
        re.compile(r"^MJ::Job::PicReader::(?P<n>\d+)$"),
        _numbered(Action.IMAGINE, "picreader", 4, "described prompt"),
    ),
    (
        re.compile(r"^MJ::Picread::Retry$"),
        lambda m: ButtonAction(Action.DESCRIBE, None, "picread_retry", custom_id=m[0]),
    ),
    (
        re.compile(r"^MJ::Job::PromptAnalyzer::(?P<n>\d+)$"),
        _numbered(Action.IMAGINE, "prompt_analyzer", 5, "shortened prompt"),
    ),
)


def _shown(custom_id: str) -> str:
    return custom_id if len(custom_id) <= 120 else custom_id[:117] + "..."


def resolve_custom_id(custom_id: str) -> ButtonAction:
    """What pressing ``custom_id`` does. Raises ``ValidationFailed`` for unknown customIds.

    REROLL is reported as ``Action.REROLL``; the service decides what a reroll of its parent
    means (a grid again, or the parent's own action, SPEC §4.3).
    """
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise ValidationFailed("customId must be a non-empty string.", details={"customId": None})
    candidate = custom_id.strip()
    for pattern, build in _CUSTOM_ID_RULES:
        match = pattern.match(candidate)
        if match is not None:
            return build(match)
    raise ValidationFailed(
        f"Unknown customId {_shown(candidate)!r}; use one of the customIds listed in the "
        "task's buttons.",
        details={"customId": _shown(candidate)},
    )


# --- friendly names --------------------------------------------------------------------------


def _names(action: ButtonAction) -> tuple[str, str, tuple[str, ...]]:
    """(friendly name, TTAPI component name, further accepted aliases) of a resolved button."""
    n = action.index
    match action.variant:
        case "upsample":
            return f"U{n}", f"upsample{n}", (f"upscale{n}", f"upscale_{n}", f"upsample_{n}")
        case "variation":
            return f"V{n}", f"variation{n}", (f"variation_{n}",)
        case "reroll" | "picread_retry":
            return "REROLL", "reroll", ("r", "retry", "describe_retry", "picread_retry")
        case "subtle" | "creative":
            return f"UPSCALE_{action.variant.upper()}", f"upscale_{action.variant}", ()
        case "2x" | "4x":
            return f"UPSCALE_{action.variant.upper()}", f"upscale_{action.variant}", ()
        case "low":
            return "VARY_SUBTLE", "low_variation", ("variation_subtle",)
        case "high":
            return "VARY_STRONG", "high_variation", ("variation_strong",)
        case "inpaint":
            return "VARY_REGION", "inpaint", ("variation_region",)
        case "zoom_2x":
            return "ZOOM_2X", "outpaint_2x", ("zoom_out_2x", "zoom_out_2")
        case "zoom_1_5x":
            return "ZOOM_1_5X", "outpaint_1.5x", ("zoom_out_1_5x", "zoom_out_1_5")
        case "custom_zoom":
            return "CUSTOM_ZOOM", "outpaint_custom", ("zoom_custom", "custom_zoom_out")
        case "picreader":
            return f"DESCRIBE{n}", f"describe{n}", (f"describe_{n}", f"picreader{n}")
        case "prompt_analyzer":
            return f"SHORTEN{n}", f"shorten{n}", (f"shorten_{n}", f"prompt_analyzer{n}")
        case _ if action.pan_direction:
            return f"PAN_{action.pan_direction.upper()}", action.variant, ()
    raise ValueError(f"no friendly name for variant {action.variant!r}")  # pragma: no cover


def _normalise(name: str) -> str:
    # "Vary (Subtle)", "vary-subtle", "VARY_SUBTLE" and "outpaint_1.5x" all become one key.
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def friendly_name(button: Button) -> str:
    """``U1``, ``VARY_SUBTLE``, ``PAN_LEFT`` …; the label or customId for buttons we don't know."""
    try:
        return _names(resolve_custom_id(button.custom_id))[0]
    except ValidationFailed:
        return button.label or button.custom_id


def ttapi_component_name(button: Button) -> str:
    """TTAPI's action name for ``button`` (``upsample1``, ``outpaint_1.5x`` …).

    Raises ``ValueError`` for a button we cannot name (an unknown upstream button).
    """
    try:
        return _names(resolve_custom_id(button.custom_id))[1]
    except ValidationFailed as exc:
        raise ValueError(f"no TTAPI name for button {button.custom_id!r}") from exc


def ttapi_components(buttons: Iterable[Button]) -> list[str]:
    """TTAPI ``components`` for a task: the names of its buttons, unknown ones skipped."""
    names: list[str] = []
    for button in buttons:
        try:
            names.append(ttapi_component_name(button))
        except ValueError:
            continue
    return names


def _aliases(button: Button) -> set[str]:
    try:
        resolved = resolve_custom_id(button.custom_id)
    except ValidationFailed:
        return {_normalise(button.label)} if button.label else set()
    friendly, ttapi, extra = _names(resolved)
    # The bare variant ("upsample", "subtle") is deliberately not an alias: it is ambiguous.
    keys = {friendly, ttapi, *extra}
    if button.label:
        keys.add(button.label)
    return {_normalise(k) for k in keys}


def resolve_alias(name: str, *, available: Sequence[Button]) -> Button:
    """The button of ``available`` that ``name`` designates.

    ``name`` may be a raw customId, a friendly name (``U1``, ``VARY_STRONG``, ``ZOOM_1_5X``,
    ``PAN_LEFT``), a TTAPI action (``upsample1``, ``high_variation``, ``outpaint_1.5x``) or a
    button label (``Vary (Subtle)``), case-insensitively. Anything else, or a button the task
    does not carry, is a ``ValidationFailed`` that lists what the task offers.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("The button name must be a non-empty string.")
    wanted = name.strip()
    for button in available:
        if button.custom_id == wanted:
            return button
    key = _normalise(wanted)
    if key:
        for button in available:
            if key in _aliases(button):
                return button
    offered = [friendly_name(b) for b in available]
    if not offered:
        raise ValidationFailed(
            f"This task has no buttons, so {_shown(wanted)!r} cannot be pressed.",
            details={"button": _shown(wanted), "available": []},
        )
    raise ValidationFailed(
        f"Button {_shown(wanted)!r} is not available on this task; it offers {', '.join(offered)}.",
        details={"button": _shown(wanted), "available": offered},
    )
