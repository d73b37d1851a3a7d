"""Editing a finished task's picture: the dashboard's editor and retexture.

The picture is the task's own result (read from our storage), so the editor needs no upload:
the new task is a plain EDIT or RETEXTURE of that image, validated and charged like any other.
"""

from __future__ import annotations

import base64
from typing import Any

from .. import storage
from ..enums import Action, Status
from ..errors import InputError
from ..selectors import task_get
from .acceptance import SubmitOutcome
from .inputs import Caller
from .submit import task_submit

#: What the editor can start from a finished picture.
EDITOR_ACTIONS = (Action.EDIT, Action.RETEXTURE)


def task_edit_result(
    *, caller: Caller, task_id: str, action: str, prompt: str, mask: Any = None
) -> SubmitOutcome:
    """Start an EDIT (with ``mask``) or a RETEXTURE of task ``task_id``'s picture, in its mode."""
    if action not in EDITOR_ACTIONS:
        raise InputError("The editor edits or retextures a picture.", field="action")
    source = task_get(organization=caller.organization, task_id=task_id)
    image = (source.result or {}).get("image")
    if source.status != Status.SUCCESS or not image:
        raise InputError("Only a finished task with a picture can be edited.", field="parent")
    data = base64.b64encode(storage.read_file(image)).decode()
    return task_submit(
        caller=caller,
        action=action,
        prompt=prompt,
        images=[data],
        mask=mask if action == Action.EDIT else None,
        mode=source.mode,
    )
