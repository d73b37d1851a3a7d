"""Which price row a task is charged by: its action's, or a variant's priced on its own."""

from __future__ import annotations

from ..actions import action_spec
from ..enums import IMAGINE_DRAFT, VIDEO_HD, Action
from ..models import Task

#: Task params: the prompt runs in draft mode (``--draft``, V7).
DRAFT = "draft"
#: Task params of a VIDEO: its resolution (``720p`` is HD, priced on its own row).
RESOLUTION = "resolution"
HD = "720p"


def price_key_for(task: Task) -> str:
    """The price key of ``task``: ``IMAGINE_DRAFT`` for a draft-mode imagine or its reroll,
    ``VIDEO_HD`` for an HD (720p) video."""
    params = task.params or {}
    if task.action in (Action.IMAGINE, Action.REROLL) and params.get(DRAFT):
        return IMAGINE_DRAFT
    if task.action == Action.VIDEO and params.get(RESOLUTION) == HD:
        return VIDEO_HD
    return action_spec(task.action).price_key
