"""Midjourney's buttons and the follow-up actions they trigger (SPEC §4.3).

Button ids use Midjourney's own formats byte for byte, because midjourney-proxy clients match
substrings of them (``"upsample::"`` in the id means "show as U button"). What each button is
lives in the table of actions (``apps.tasks.actions``); this module reads it in three
directions:

* ``buttons_for`` — which buttons a finished task carries;
* ``resolve_custom_id`` — what pressing a button does (action, index, zoom, pan, modal);
* ``friendly_name`` / ``resolve_alias`` — our names for buttons (``U1``, ``VARY_SUBTLE`` …),
  always checked against the buttons the task actually offers. A dialect with names of its
  own passes them in (``extra_names``); they live with the dialect, not here.

Pure module: no Django settings, no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import ValidationFailed

from .actions import (
    ACTIONS,
    IMPLIED_PRESSES,
    PAN_DIRECTIONS,
    PRESSES,
    PressSpec,
    check_index,
    label_key,
    result_button_set,
    unknown_shape_message,
)
from .errors import InputError

__all__ = [
    "GRID_ACTIONS",
    "PAN_DIRECTIONS",
    "Button",
    "ButtonAction",
    "buttons_for",
    "friendly_name",
    "resolve_alias",
    "resolve_custom_id",
]

BUTTON_TYPE = 2
#: Discord's grey "secondary" style. Midjourney shows every result button in it; the green
#: style 3 appears only in /settings toggles, which we do not model.
STYLE_SECONDARY = 2
STYLE_SUCCESS = 3

#: Actions whose result is a 2x2 grid in Midjourney.
GRID_ACTIONS: frozenset[str] = frozenset(a for a, spec in ACTIONS.items() if spec.grid)

#: A dialect's own names for a resolved button (its kind and number).
ExtraNames = Callable[[PressSpec, int | None], Iterable[str]]


@dataclass(frozen=True)
class Button:
    """One button of a result. Stored on the task as ``as_dict`` gives it: that JSON shape
    (``{custom_id, emoji, label, type, style}``, domain names) is the stored format, which each
    dialect renames to its own wire keys on the way out."""

    custom_id: str
    emoji: str
    label: str
    type: int = BUTTON_TYPE
    style: int = STYLE_SECONDARY

    def as_dict(self) -> dict[str, str | int]:
        return {
            "custom_id": self.custom_id,
            "emoji": self.emoji,
            "label": self.label,
            "type": self.type,
            "style": self.style,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Button:
        """Inverse of ``as_dict``, tolerant of the missing keys some upstreams omit."""
        return cls(
            custom_id=str(data["custom_id"]),
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
    #: Midjourney job hash embedded in the button id, if the format carries one.
    job_hash: str | None = None
    custom_id: str = ""
    #: The row of the table of actions this button is.
    press: PressSpec | None = field(default=None, compare=False, repr=False)


# --- building buttons ------------------------------------------------------------------------

_HASH_RE = re.compile(r"^[^:\s]+$")


def buttons_for(action: str, *, job_hash: str, is_grid: bool) -> list[Button]:
    """The buttons Midjourney attaches to a successful task of ``action``.

    ``is_grid`` selects grid buttons (U1-U4, reroll, V1-V4) or single-image buttons (upscale,
    vary, zoom, pan) for image actions; DESCRIBE, SHORTEN and SWAP_FACE ignore it. Raises
    ``ValueError`` for a malformed hash or an unknown action: both are programming errors.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    pairs = result_button_set(action, is_grid=is_grid)
    if any("{hash}" in press.emits for press, _ in pairs) and not _HASH_RE.match(job_hash or ""):
        raise ValueError(f"job hash {job_hash!r} cannot be embedded in a button id")
    return [
        Button(
            press.custom_id(job_hash=job_hash, index=index),
            press.emoji.format(n=index),
            press.label.format(n=index),
        )
        for press, index in pairs
    ]


# --- button id → action ----------------------------------------------------------------------


def _shown(custom_id: str) -> str:
    return custom_id if len(custom_id) <= 120 else custom_id[:117] + "..."


def resolve_custom_id(custom_id: str) -> ButtonAction:
    """What pressing the button ``custom_id`` does. Raises ``ValidationFailed`` for unknown ids.

    REROLL is reported as ``Action.REROLL``; the service decides what a reroll of its parent
    means (a grid again, or the parent's own action, SPEC §4.3).
    """
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise InputError("The button id must be a non-empty string.", field="button")
    candidate = custom_id.strip()
    for press in PRESSES.values():
        match = press.pattern.match(candidate)
        if match is None:
            continue
        groups = match.groupdict()
        index = int(groups["n"]) if groups.get("n") is not None else None
        check_index(press, index, shown=_shown(candidate))
        return ButtonAction(
            action=press.action,
            index=index,
            variant=press.key,
            zoom_factor=press.zoom_factor,
            pan_direction=press.pan_direction,
            requires_modal=press.modal is not None,
            job_hash=groups.get("hash"),
            custom_id=candidate,
            press=press,
        )
    shown = _shown(candidate)
    raise InputError(
        unknown_shape_message(candidate, shown)
        or f"Unknown button {shown!r}; press one of the buttons listed on the task.",
        field="button",
        details={"button": shown},
    )


def resolve_button(button: Button) -> ButtonAction | None:
    """What ``button`` does, or ``None`` for a button we do not know (an upstream's own)."""
    try:
        return resolve_custom_id(button.custom_id)
    except ValidationFailed:
        return None


# --- names -----------------------------------------------------------------------------------


def friendly_name(button: Button) -> str:
    """``U1``, ``VARY_SUBTLE``, ``PAN_LEFT`` …; the label or id for buttons we don't know."""
    resolved = resolve_button(button)
    if resolved is None or resolved.press is None:
        return button.label or button.custom_id
    return resolved.press.name(resolved.index)


def _aliases(button: Button, extra_names: ExtraNames | None) -> set[str]:
    resolved = resolve_button(button)
    if resolved is None or resolved.press is None:
        return {label_key(button.label)} if button.label else set()
    press, index = resolved.press, resolved.index
    # The bare key ("upsample", "subtle") is deliberately not an alias: it is ambiguous.
    keys = {*press.all_names(index)}
    if extra_names is not None:
        keys.update(extra_names(press, index))
    if button.label:
        keys.add(button.label)
    return {label_key(k) for k in keys}


def _offered_name(button: Button, offer_names: ExtraNames | None) -> str:
    """The name to list a button under: the dialect's own when it has one, else ours."""
    resolved = resolve_button(button)
    if offer_names is not None and resolved is not None and resolved.press is not None:
        first = next(iter(offer_names(resolved.press, resolved.index)), None)
        if first:
            return first
    return friendly_name(button)


def resolve_alias(
    name: str,
    *,
    available: Sequence[Button],
    extra_names: ExtraNames | None = None,
    offer_extra_names: bool = False,
) -> Button:
    """The button of ``available`` that ``name`` designates.

    ``name`` may be a raw button id, one of our names (``U1``, ``VARY_STRONG``, ``ZOOM_1_5X``,
    ``PAN_LEFT``), a dialect's own name (given by ``extra_names``) or a button label
    (``Vary (Subtle)``), case-insensitively. Anything else, or a button the task does not
    carry, is a ``ValidationFailed`` that lists what the task offers (under the dialect's
    names with ``offer_extra_names``).
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("The button name must be a non-empty string.", field="button")
    wanted = name.strip()
    for button in available:
        if button.custom_id == wanted:
            return button
    key = label_key(wanted)
    if key:
        for button in available:
            if key in _aliases(button, extra_names):
                return button
    offered = [_offered_name(b, extra_names if offer_extra_names else None) for b in available]
    if not offered:
        raise InputError(
            f"This task has no buttons, so {_shown(wanted)!r} cannot be pressed.",
            field="button",
            details={"button": _shown(wanted), "available": []},
        )
    raise InputError(
        f"Button {_shown(wanted)!r} is not available on this task; it offers {', '.join(offered)}.",
        field="button",
        details={"button": _shown(wanted), "available": offered},
    )


def find_button(
    available: Sequence[Button], *, press: PressSpec, index: int | None
) -> Button | None:
    """The button of ``available`` of kind ``press`` (and number ``index``), if it has one."""
    for button in available:
        resolved = resolve_button(button)
        if resolved is not None and resolved.press == press and resolved.index == index:
            return button
    return None


def buttons_of(data: Iterable[Mapping[str, Any]] | None) -> list[Button]:
    """A task's stored buttons as ``Button`` values."""
    return [Button.from_dict(b) for b in data or []]


def with_implied(buttons: Sequence[Button]) -> list[Button]:
    """``buttons`` and, after each one that implies others (Animate → Animate Manually), those,
    with the same Midjourney job hash: what a press of the task may choose from."""
    out: list[Button] = []
    for button in buttons:
        out.append(button)
        resolved = resolve_button(button)
        if resolved is None or resolved.press is None or not resolved.job_hash:
            continue
        for press in IMPLIED_PRESSES.get(resolved.press.key, ()):
            out.append(
                Button(
                    custom_id=press.custom_id(job_hash=resolved.job_hash),
                    emoji=press.emoji,
                    label=press.label,
                )
            )
    return out
