"""Remix, in the domain's words: the two task params that carry it.

Pure module (a leaf): the services write these params, engines read them from ``Job.params``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Remix mode asked for at a submit (``enableRemix``); every follow-up of the family holds it.
REMIX_MODE = "remix_mode"
#: This variation, reroll or pan is remixed: its prompt came from the remix step.
REMIXED = "remix"


def is_remixed(params: Mapping[str, Any]) -> bool:
    """Whether a task's (or a job's) params say it is remixed."""
    return bool(params.get(REMIXED))
