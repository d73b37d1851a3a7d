"""TTAPI's names for the buttons (its ``action`` words and a job's ``components``).

TTAPI's own vocabulary, mapped onto the keys of the table of actions
(``apps.tasks.actions.PRESSES``). The first name of each row is the one TTAPI reports in
``components`` and a follow-up's ``action``; the others are accepted on the way in. ``{n}`` is
the number of a numbered button.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from apps.tasks.actions import PressSpec

#: Where the names come from (checked by ``tests/protocols/test_ttapi_documented_names.py``):
#: TTAPI's action endpoint, https://docs.ttapi.io/api-reference/en/midjourney/action
#: ("upsample1 = U1, variation1 = V1"); its fetch example, whose ``components`` are
#: ``upsample1..4, reroll, variation1..4``, https://docs.ttapi.io/api/en/midjourney/fetch; and
#: the action list TTAPI's console sends (``high_variation``, ``low_variation``, ``upscale2``,
#: ``upscale4``, ``zoom_out_2``, ``zoom_out_1_5``, ``pan_left``, ``upscale_creative``,
#: ``upscale_subtle``), plus ``reroll0`` as TTAPI's older docs wrote the grid's reroll (accepted;
#: ``components`` lists the first name of each, ``reroll`` as the fetch example does).
#: TTAPI's ``redo_upscale2/4``, ``redo_upscale_subtle`` and ``make_square`` name buttons we do
#: not offer: an action with those names is refused with the list of buttons on offer.
from apps.tasks.buttons import Button, resolve_button

TTAPI_NAMES: Mapping[str, tuple[str, ...]] = {
    "upsample": ("upsample{n}",),
    "variation": ("variation{n}",),
    "reroll": ("reroll", "reroll0"),
    "subtle": ("upscale_subtle",),
    "creative": ("upscale_creative",),
    "2x": ("upscale2", "upscale_2x", "upscale2x"),
    "4x": ("upscale4", "upscale_4x", "upscale4x"),
    "low": ("low_variation",),
    "high": ("high_variation",),
    "inpaint": ("inpaint",),
    "zoom_2x": ("zoom_out_2", "zoom_out_2x", "outpaint_2x"),
    "zoom_1_5x": ("zoom_out_1.5", "zoom_out_1_5x", "zoom_out_1_5", "outpaint_1.5x"),
    "custom_zoom": ("outpaint_custom", "custom_zoom"),
    "pan_left": ("pan_left",),
    "pan_right": ("pan_right",),
    "pan_up": ("pan_up",),
    "pan_down": ("pan_down",),
    "picreader": ("describe{n}",),
    "picread_retry": ("reroll", "reroll0"),
    "prompt_analyzer": ("shorten{n}",),
    # Video (TTAPI documents its own routes, /midjourney/video/submit|extend; these name the
    # buttons in ``components`` and on /action).
    "animate_high": ("animate_high",),
    "animate_low": ("animate_low",),
    "animate_high_manual": ("animate_high_manual", "animate_manual_high"),
    "animate_low_manual": ("animate_low_manual", "animate_manual_low"),
    "animate_high_extend": ("extend_high{n}",),
    "animate_low_extend": ("extend_low{n}",),
}

#: The button TTAPI's ``/inpaint`` endpoint presses.
INPAINT_KEY = "inpaint"


def ttapi_names(press: PressSpec, index: int | None) -> tuple[str, ...]:
    """TTAPI's names for the button ``press`` (number ``index``); first is the reported one."""
    return tuple(name.format(n=index) for name in TTAPI_NAMES.get(press.key, ()))


def ttapi_component_name(button: Button) -> str:
    """TTAPI's action name for ``button`` (``upsample1``, ``outpaint_1.5x`` …).

    Raises ``ValueError`` for a button we cannot name (an unknown upstream button).
    """
    resolved = resolve_button(button)
    names = ttapi_names(resolved.press, resolved.index) if resolved and resolved.press else ()
    if not names:
        raise ValueError(f"no TTAPI name for button {button.custom_id!r}")
    return names[0]


def ttapi_components(buttons: Iterable[Button]) -> list[str]:
    """TTAPI ``components`` for a task: the names of its buttons, unknown ones skipped."""
    names: list[str] = []
    for button in buttons:
        try:
            names.append(ttapi_component_name(button))
        except ValueError:
            continue
    return names
