"""TTAPI's documented action names all reach the button they name (issue 14).

Sources (see ``apps/protocols/ttapi/actions.py``):
https://docs.ttapi.io/api-reference/en/midjourney/action and
https://docs.ttapi.io/api/en/midjourney/fetch.
"""

from __future__ import annotations

import pytest

from apps.protocols.ttapi.actions import TTAPI_NAMES, ttapi_names
from apps.tasks.actions import PRESSES

#: TTAPI's name → our button kind and number.
DOCUMENTED = {
    **{f"upsample{n}": ("upsample", n) for n in range(1, 5)},
    **{f"variation{n}": ("variation", n) for n in range(1, 5)},
    "reroll": ("reroll", None),
    "reroll0": ("reroll", None),
    "high_variation": ("high", None),
    "low_variation": ("low", None),
    "upscale2": ("2x", None),
    "upscale4": ("4x", None),
    "upscale_subtle": ("subtle", None),
    "upscale_creative": ("creative", None),
    "zoom_out_2": ("zoom_2x", None),
    "zoom_out_1_5": ("zoom_1_5x", None),
    "pan_left": ("pan_left", None),
    "pan_right": ("pan_right", None),
    "pan_up": ("pan_up", None),
    "pan_down": ("pan_down", None),
}


def _accepted() -> dict[str, tuple[str, int | None]]:
    names: dict[str, tuple[str, int | None]] = {}
    for key in TTAPI_NAMES:
        numbered = "{n}" in "".join(TTAPI_NAMES[key])
        for index in range(1, 5) if numbered else (None,):
            for name in ttapi_names(PRESSES[key], index):
                names.setdefault(name, (key, index))
    return names


@pytest.mark.parametrize(("name", "button"), sorted(DOCUMENTED.items()))
def test_documented_name_is_accepted_for_its_button(name, button):
    assert _accepted().get(name) == button


def test_the_grid_reports_the_documented_names():
    reported = {
        ttapi_names(PRESSES[key], index)[0]
        for key, index in [("upsample", 1), ("variation", 4), ("low", None), ("zoom_2x", None)]
    }
    assert reported == {"upsample1", "variation4", "low_variation", "zoom_out_2"}
