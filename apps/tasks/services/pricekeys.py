"""Which price row a task is charged by: its action's, or a variant's priced on its own."""

from __future__ import annotations

from ..actions import action_spec
from ..enums import IMAGINE_DRAFT, Action
from ..models import Task

#: Task params: the prompt runs in draft mode (``--draft``, V7).
DRAFT = "draft"


def price_key_for(task: Task) -> str:
    """The price key of ``task``: ``IMAGINE_DRAFT`` for a draft-mode imagine or its reroll."""
    params = task.params or {}
    if task.action in (Action.IMAGINE, Action.REROLL) and params.get(DRAFT):
        return IMAGINE_DRAFT
    return action_spec(task.action).price_key
