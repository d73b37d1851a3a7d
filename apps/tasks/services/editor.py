"""Editing a finished task's picture: the dashboard's editor and retexture.

The picture is the task's own result (read from our storage), so the editor needs no upload:
the new task is a plain EDIT or RETEXTURE of that image, validated and charged like any other.
An edit may instead send an enlarged canvas holding the picture (outpainting: the uncovered
part is transparent, and white in the mask) — the same input the EDIT action takes from the
API.
"""

from __future__ import annotations

import base64
from typing import Any

from .. import storage
from ..enums import Action, Status
from ..errors import FIELD, InputError
from ..selectors import task_get
from .acceptance import SubmitOutcome
from .inputs import Caller, load_image
from .submit import task_submit

#: What the editor can start from a finished picture.
EDITOR_ACTIONS = (Action.EDIT, Action.RETEXTURE)


def task_edit_result(
    *,
    caller: Caller,
    task_id: str,
    action: str,
    prompt: str,
    mask: Any = None,
    canvas: Any = None,
) -> SubmitOutcome:
    """Start an EDIT (with ``mask``) or a RETEXTURE of task ``task_id``'s picture, in its mode.

    ``canvas`` (an edit only): the picture placed on a larger, transparent canvas; it is
    edited instead of the picture itself, and must be at least the picture's size."""
    if action not in EDITOR_ACTIONS:
        raise InputError("The editor edits or retextures a picture.", field="action")
    source = task_get(organization=caller.organization, task_id=task_id)
    image = (source.result or {}).get("image")
    if source.status != Status.SUCCESS or not image:
        raise InputError("Only a finished task with a picture can be edited.", field="parent")
    stored = storage.read_file(image)
    data = base64.b64encode(stored).decode()
    if canvas not in (None, ""):
        if action != Action.EDIT:
            raise InputError(
                f"Only an edit takes {FIELD}: retexture keeps the picture's size.",
                field="images",
            )
        picture = load_image(data, field="images")
        enlarged = load_image(canvas, field="images")
        if enlarged.width < picture.width or enlarged.height < picture.height:
            raise InputError(
                f"{FIELD}: the canvas ({enlarged.width}x{enlarged.height}) must be at least the "
                f"picture's size ({picture.width}x{picture.height}).",
                field="images",
            )
        data = canvas
    return task_submit(
        caller=caller,
        action=action,
        prompt=prompt,
        images=[data],
        mask=mask if action == Action.EDIT else None,
        mode=source.mode,
    )
