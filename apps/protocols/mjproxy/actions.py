"""midjourney-proxy's names for the buttons of its legacy change endpoints.

``/mj/submit/action`` presses a button by its id (Midjourney's own); the older
``/mj/submit/change`` (``{action: UPSCALE|VARIATION|REROLL, index}``) and
``/mj/submit/simple-change`` (``"<taskId> U1"``) name it in the proxy's words, mapped here onto
the keys of the table of actions (``apps.tasks.actions.PRESSES``).
"""

from __future__ import annotations

from collections.abc import Mapping

#: ``/mj/submit/change`` ``action`` → (button key, takes an ``index``).
CHANGE_ACTIONS: Mapping[str, tuple[str, bool]] = {
    "UPSCALE": ("upsample", True),
    "VARIATION": ("variation", True),
    "REROLL": ("reroll", False),
}

#: ``/mj/submit/simple-change`` letter → (button key, takes a number).
SIMPLE_CHANGE_LETTERS: Mapping[str, tuple[str, bool]] = {
    "U": ("upsample", True),
    "V": ("variation", True),
    "R": ("reroll", False),
}
