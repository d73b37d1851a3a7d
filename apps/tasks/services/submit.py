"""Accepting a new (non follow-up) task: IMAGINE, DESCRIBE, BLEND, SHORTEN, SWAP_FACE.

What each action takes is its row in the table of actions (``Inputs``); everything that can
reject the request runs before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import prompt as prompts
from ..actions import ACTIONS, NEW_TASK_ACTIONS, Inputs
from ..enums import Action, Status
from ..errors import FIELD, InputError
from ..imageinput import DecodedImage
from ..models import Task
from ..remix import REMIX_MODE
from .acceptance import SubmitOutcome, create_and_accept, new_seed
from .inputs import (
    Caller,
    ClientEcho,
    check_hook,
    check_state,
    check_tier_mode,
    discard_files,
    load_image,
    parse_checked,
    resolve_mode,
    resolve_pool,
    store_inputs,
)
from .pricekeys import DRAFT
from .references import REFERENCES, rehost_prompt_urls, with_rehosted
from .translation import prompt_for_upstream
from .video import task_submit_video

BLEND_DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")


def _inputs_of(action: str) -> Inputs:
    spec = ACTIONS.get(action)
    if spec is None or spec.inputs is None:
        raise InputError(
            f"Unknown action '{action}'. Use {', '.join(NEW_TASK_ACTIONS[:-1])} or "
            f"{NEW_TASK_ACTIONS[-1]}; follow-ups (upscale, variation …) are submitted with a "
            f"parent task and a button.",
            field="action",
        )
    return spec.inputs


def _images(action: str, rule: Inputs, images: Sequence[Any]) -> list[DecodedImage]:
    count = len(images)
    if not rule.min_images <= count <= rule.max_images:
        raise InputError(
            rule.count_message.replace("{count}", str(count)),
            field="images",
            action=action,
            details={"count": count},
        )
    return [
        load_image(value, field="images", index=i, action=action) for i, value in enumerate(images)
    ]


def _dimensions(value: str | None) -> str:
    dims = (value or "SQUARE").upper()
    if dims not in BLEND_DIMENSIONS:
        raise InputError(
            f"{FIELD} must be PORTRAIT, SQUARE or LANDSCAPE; got '{value}'.", field="dimensions"
        )
    return dims


def _mask(action: str, rule: Inputs, mask: Any) -> DecodedImage | None:
    """The editor's mask (white: the area to repaint); refused for an action without one."""
    if not rule.mask:
        if mask not in (None, ""):
            raise InputError(
                f"{action} takes no {FIELD}; only the editor (EDIT) does.", field="mask"
            )
        return None
    if mask in (None, ""):
        raise InputError(
            f"The editor needs {FIELD}: the area to repaint, white on black (transparent "
            "parts of the image, an enlarged canvas, are painted too).",
            field="mask",
        )
    return load_image(mask, field="mask", action=action)


def task_submit(
    *,
    caller: Caller,
    action: str,
    prompt: str = "",
    images: Sequence[Any] = (),
    mode: str | None = None,
    path_mode: str | None = None,
    dimensions: str | None = None,
    echo: ClientEcho | None = None,
    remix: bool = False,
    mask: Any = None,
) -> SubmitOutcome:
    """Accept a new (non follow-up) task of ``action``, validated by its row of the table.

    ``remix`` turns remix mode on for the task's follow-ups (variations, rerolls and pans
    then ask for the prompt first)."""
    if (action or "").upper() == Action.VIDEO:
        # Video has fields of its own (motion, batch size …); its service applies their
        # defaults here, so no caller's prompt is dropped on the way. Remix mode does not
        # apply to a video's follow-ups (they have no prompt to change).
        if dimensions:
            raise InputError("VIDEO takes no dimensions.", field="dimensions")
        if mask not in (None, ""):
            raise InputError(f"VIDEO takes no {FIELD}; only the editor (EDIT) does.", field="mask")
        return task_submit_video(
            caller=caller, prompt=prompt, images=images, mode=mode, path_mode=path_mode, echo=echo
        )
    echo = echo or ClientEcho()
    notify_hook = check_hook(echo.notify_hook)
    state = check_state(echo.state)
    action = (action or "").upper()
    rule = _inputs_of(action)
    parsed = parse_checked(prompt) if rule.prompt else None
    decoded = _images(action, rule, images)
    mask_image = _mask(action, rule, mask)
    params: dict[str, Any] = {}
    if rule.dimensions:
        params["dimensions"] = _dimensions(dimensions)
    if remix:
        params[REMIX_MODE] = True
    if parsed is not None and prompts.is_draft(parsed):
        params[DRAFT] = True
    chosen_mode = resolve_mode(
        requested=mode, path_mode=path_mode, flag=parsed.mode_flag if parsed else None
    )
    check_tier_mode(caller.organization, chosen_mode)
    pool = resolve_pool(caller, mode=chosen_mode)
    seed = prompts.seed(parsed) if parsed is not None else None
    # Before anything is stored: a banned word in the translation still refuses the request.
    upstream = (
        prompt_for_upstream(organization=caller.organization, parsed=parsed)
        if parsed is not None
        else None
    )
    rehosted = rehost_prompt_urls(parsed, upstream.text) if parsed and upstream else None
    if rehosted is not None and rehosted.references:
        params[REFERENCES] = rehosted.references
    try:
        input_files = store_inputs(decoded)
        mask_files = store_inputs([mask_image] if mask_image else [])
    except BaseException:
        discard_files(rehosted.files if rehosted else [])
        raise
    if mask_files:
        params["mask"] = mask_files[0]
    task = Task(
        organization=caller.organization,
        api_key=caller.api_key,
        created_by=caller.user,
        is_test=caller.is_test,
        protocol=caller.protocol,
        action=action,
        status=Status.NOT_START,
        mode=chosen_mode,
        pool=pool,
        prompt=(prompt or "").strip(),
        prompt_en=rehosted.text if rehosted else "",
        state=state,
        params=params,
        metadata=echo.metadata or {},
        inputs=input_files,
        notify_hook=notify_hook,
        seed=seed if seed is not None else new_seed(),
        properties=with_rehosted(upstream.properties, rehosted)
        if upstream
        else {"finalPrompt": ""},
    )
    files = [*input_files, *mask_files, *(rehosted.files if rehosted else [])]
    return create_and_accept(task, input_files=files)
