"""Pressing a button of a finished task, and the second step of a two-step (MODAL) button.

``task_press`` is the one way every dialect and the dashboard press a button: by its id, by a
name (ours, a label, or a dialect's own through ``ByName.extra_names``) or by its kind and
number (``BySpec``). A two-step button either waits in MODAL for ``task_submit_modal`` or — when
the press carries its second step (``ModalInput``, as TTAPI sends it) — is validated and
accepted in one go: a rejected mask or prompt leaves no task behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.billing.ledger import ledger_hold
from apps.core.errors import NotFound, ValidationFailed

from .. import prompt as prompts
from .. import storage
from ..actions import (
    PRESSES,
    VIDEO_CLIP_SECONDS,
    VIDEO_SECONDS,
    ButtonRef,
    ByName,
    BySpec,
    ModalStep,
    PressSpec,
)
from ..buttons import (
    Button,
    ButtonAction,
    buttons_of,
    find_button,
    friendly_name,
    resolve_alias,
    resolve_custom_id,
    with_implied,
)
from ..enums import Action, Status, parse_mode
from ..errors import FIELD, InputError, ParentNotFound
from ..events import task_changed
from ..lifecycle import kick_dispatcher
from ..models import Task
from ..remix import REMIX_MODE, REMIXED
from ..selectors import task_get
from .acceptance import (
    SubmitOutcome,
    accept,
    accept_lock,
    create_and_accept,
    finish_acceptance,
    new_seed,
)
from .inputs import (
    Caller,
    ClientEcho,
    check_hook,
    check_state,
    discard_files,
    follow_up_pool,
    load_image,
    parse_checked,
)
from .pricekeys import DRAFT, RESOLUTION
from .references import REFERENCES, rehost_prompt_urls, with_rehosted
from .translation import prompt_for_upstream
from .video import (
    END_FRAME,
    END_REFERENCE,
    SD,
    extension_params,
    is_extend,
    take_video_flags,
    video_batch_size,
    video_motion,
)


@dataclass(frozen=True)
class ModalInput:
    """The second step of a two-step button: a prompt and/or a mask (Vary (Region))."""

    prompt: str | None = None
    mask: Any = None


@dataclass(frozen=True)
class _SecondStep:
    """A validated second step, ready to be written (its mask already stored as ``files``)."""

    prompt: str | None
    prompt_en: str
    params: dict[str, Any]
    seed: int | None
    files: list[str]
    properties: dict[str, Any]


# --- choosing the button ---------------------------------------------------------------------


def _press_parent(caller: Caller, parent_id: str) -> Task:
    if not str(parent_id or "").strip():
        # Not given at all: a request to correct, not a task to look for.
        raise InputError(
            f"{FIELD} is required: the id of the task whose button to press.", field="parent"
        )
    try:
        parent = task_get(organization=caller.organization, task_id=parent_id)
    except NotFound as exc:
        raise ParentNotFound("The parent task does not exist.") from exc
    if parent.status != Status.SUCCESS:
        raise InputError(
            f"The parent task is {parent.status}; buttons work only on a task that succeeded.",
            field="parent",
            details={"status": parent.status},
        )
    return parent


def _chosen(available: list[Button], *, custom_id: str | None, button: ButtonRef | None) -> str:
    """The id of the parent's button the caller designates."""
    if isinstance(button, ByName):
        return resolve_alias(
            button.name,
            available=available,
            extra_names=button.extra_names,
            offer_extra_names=button.offer_extra_names,
        ).custom_id
    if isinstance(button, BySpec):
        found = find_button(available, press=button.press, index=button.index)
        if found is None:
            offered = [friendly_name(b) for b in available]
            raise InputError(
                f"Button {button.shown()!r} is not available on this task; it offers "
                f"{', '.join(offered) or 'none'}.",
                field="button",
                details={"button": button.shown(), "available": offered},
            )
        return found.custom_id
    wanted = (custom_id or "").strip()
    if wanted not in {b.custom_id for b in available}:
        ids = ", ".join(b.custom_id for b in available) or "none"
        raise InputError(
            f"The parent task has no button '{wanted}'. It offers: {ids}.", field="button"
        )
    return wanted


def _check_same_kind(caller: Caller, task: Task, *, field: str) -> None:
    if caller.is_test != task.is_test:
        raise InputError(
            "Test-mode and live tasks cannot be mixed: use a key of the same kind as the parent.",
            field=field,
        )


def _check_parent_mode(parent: Task, *, mode: str | None, path_mode: str | None) -> None:
    requested = mode if mode not in (None, "") else path_mode
    if requested in (None, ""):
        return
    if parse_mode(requested) != parent.mode:
        raise InputError(
            f"Follow-ups run in the parent's mode ({parent.mode}); {requested} was requested.",
            field="mode",
            details={"parent_mode": parent.mode},
        )


def _starting_prompt(parent: Task, press: PressSpec, index: int | None) -> str:
    """The prompt a two-step press starts with; the client may replace it in step two."""
    if press.modal == ModalStep.PROMPT:
        candidates = prompts.result_prompts(parent.properties)
        if index is None or not 1 <= index <= len(candidates):
            raise InputError("The parent task has no prompt with that number.", field="button")
        return candidates[index - 1]
    if press.modal == ModalStep.ZOOM:
        return f"{parent.prompt_en} --zoom 2".strip()
    return parent.prompt_en


def _follow_up(
    caller: Caller,
    parent: Task,
    pressed: ButtonAction,
    press: PressSpec,
    *,
    state: str | None,
    notify_hook: str,
    echo: ClientEcho,
) -> Task:
    params: dict[str, Any] = {
        "variant": press.key,
        "index": pressed.index,
        "custom_id": pressed.custom_id,
    }
    if press.zoom_factor is not None:
        params["zoom_factor"] = press.zoom_factor
    if press.pan_direction is not None:
        params["pan_direction"] = press.pan_direction
    if (parent.params or {}).get(REMIX_MODE):
        # Remix mode asked for at the submit (``enableRemix``) holds for the whole family.
        params[REMIX_MODE] = True
    inputs: list[str] = list(parent.inputs) if press.reuses_inputs else []
    if press.action == Action.REROLL:
        # A reroll runs the job that made the grid again with a new seed: a blend needs its
        # images and dimensions back, an imagine its reference images.
        params["reroll_of"] = (parent.params or {}).get("reroll_of") or parent.action
        if (parent.params or {}).get(DRAFT):
            params[DRAFT] = True
        if (parent.params or {}).get(REFERENCES):
            params[REFERENCES] = parent.params[REFERENCES]
        if "dimensions" in (parent.params or {}):
            params["dimensions"] = parent.params["dimensions"]
        if params["reroll_of"] == Action.EDIT and (parent.params or {}).get("mask"):
            # An edit's reroll repaints the same area of the same picture.
            params["mask"] = parent.params["mask"]
    if press.action == Action.VIDEO:
        # An extension continues its video (its resolution, its length so far: refused past
        # the limit before anything is held); an animate starts a new SD clip.
        params.update(
            extension_params(parent, field="button")
            if is_extend(params)
            else {RESOLUTION: SD, VIDEO_SECONDS: VIDEO_CLIP_SECONDS}
        )
    return Task(
        organization=caller.organization,
        api_key=caller.api_key,
        created_by=caller.user,
        is_test=parent.is_test,
        protocol=caller.protocol,
        action=press.action,
        mode=parent.mode,
        pool=follow_up_pool(parent),
        parent=parent,
        custom_id=pressed.custom_id,
        prompt=parent.prompt,
        prompt_en=parent.prompt_en,
        state=state,
        params=params,
        metadata=echo.metadata or {},
        inputs=inputs,
        notify_hook=notify_hook,
        seed=new_seed(),
        properties={"finalPrompt": parent.prompt_en},
    )


# --- remix ---------------------------------------------------------------------------------


def _remix_on(caller: Caller, parent: Task, remix: bool | None) -> bool:
    """Whether a remixable press opens the prompt step: the request's own say, else remix mode
    set on the family's first submit, else the key's default."""
    if remix is not None:
        return remix
    if (parent.params or {}).get(REMIX_MODE):
        return True
    return bool(caller.api_key is not None and caller.api_key.remix)


def _step_of(task: Task) -> ModalStep | None:
    params = task.params or {}
    press = PRESSES.get(params.get("variant", ""))
    if press is None:
        return None
    if press.modal is None and params.get(REMIXED):
        # A remixed animate or extend asks what Animate (Manual) asks: the motion's prompt.
        return ModalStep.ANIMATE if press.action == Action.VIDEO else ModalStep.REMIX
    return press.modal


# --- the second step -------------------------------------------------------------------------


def _second_step(task: Task, *, prompt: str | None, mask: Any) -> _SecondStep:
    """Validate the second step of ``task`` (MODAL, or about to be) and store its files.

    Everything that can refuse the step (the prompt, its translation, the mask, the video
    settings) runs before anything is stored, and a failure while storing discards what was
    stored. Nothing is written to the database here; the caller writes the result in its
    transaction and discards ``files`` if that fails.
    """
    step = _step_of(task)
    if step != ModalStep.MASK and mask not in (None, ""):
        # Only Vary (Region) takes a mask: a zoom, a prompt or a motion given one would drop
        # it and charge for something else than what was asked.
        raise InputError(f"This step takes no {FIELD}; only Vary (Region) does.", field="mask")
    text = (prompt if prompt not in (None, "") else task.prompt_en) or ""
    if step == ModalStep.ZOOM and text.strip().startswith("--") and task.parent is not None:
        # Clients often send just "--zoom 1.5": the description stays the parent's.
        text = f"{task.parent.prompt_en} {text.strip()}"
    video_flags: dict[str, str] = {}
    if step == ModalStep.ANIMATE:
        # The prompt guides the motion; Midjourney's --motion/--bs/--loop/--end in it are the
        # video's settings, not words of the prompt.
        text, video_flags = take_video_flags(text)
        if not text.strip():
            raise InputError(
                f"Animate (Manual) needs {FIELD}: the prompt that guides the motion.",
                field="prompt",
            )
    parsed = parse_checked(text, allow_zoom=step == ModalStep.ZOOM)
    if parsed.mode_flag is not None and parsed.mode_flag != task.mode:
        raise InputError(
            f"Follow-ups run in the parent's mode ({task.mode}); the prompt asks for "
            f"{parsed.mode_flag}.",
            field="prompt",
            details={"parent_mode": task.mode},
        )
    params = dict(task.params or {})
    if task.action in (Action.IMAGINE, Action.REROLL):
        params.pop(DRAFT, None)
        if prompts.is_draft(parsed):
            params[DRAFT] = True
    if step == ModalStep.ZOOM:
        factor = prompts.zoom(parsed)
        if factor is None:
            raise InputError(
                "Custom zoom needs a prompt with --zoom between 1 and 2.", field="prompt"
            )
        params["zoom_factor"] = factor
    decoded = None
    if step == ModalStep.MASK:
        if mask in (None, ""):
            raise InputError(
                f"Vary (Region) needs {FIELD}: the area to change, white on black.", field="mask"
            )
        decoded = load_image(mask, field="mask")
    # Before anything is stored: a banned word in the translation still refuses the step.
    upstream = prompt_for_upstream(
        organization=task.organization, parsed=parsed, allow_zoom=step == ModalStep.ZOOM
    )
    files: list[str] = []
    try:
        if decoded is not None:
            files = [storage.store_input(data=decoded.data, ext=decoded.format.lower())]
            params["mask"] = files[0]
        if step == ModalStep.ANIMATE:
            files = _animate_settings(params, video_flags)
        rehosted = rehost_prompt_urls(parsed, upstream.text)
    except BaseException:
        discard_files(files)
        raise
    files = [*files, *rehosted.files]
    ends = (params.get(REFERENCES) or {}).get(END_REFERENCE)
    params.pop(REFERENCES, None)
    if rehosted.references or ends:
        params[REFERENCES] = {**rehosted.references, **({END_REFERENCE: ends} if ends else {})}
    return _SecondStep(
        prompt=text if prompt not in (None, "") else None,
        prompt_en=rehosted.text,
        properties=with_rehosted(upstream.properties, rehosted),
        params=params,
        seed=prompts.seed(parsed),
        files=files,
    )


def _animate_settings(params: dict[str, Any], flags: dict[str, str]) -> list[str]:
    """Animate (Manual)'s settings into ``params``: the button's motion unless ``--motion``
    says otherwise, ``--bs``, ``--loop``, an end frame (``--end <url>``, stored: the files
    returned). Nothing is stored until every setting is valid."""
    params["manual"] = True
    params["motion"] = video_motion(
        flags.get("motion") or params.get("motion") or _motion_of(params)
    )
    params["batch_size"] = video_batch_size(flags.get("bs"))
    params["loop"] = flags.get("loop") == "true"
    if params["loop"] and str(params.get("variant", "")).endswith("_extend"):
        raise InputError(f"A loop cannot be extended; remove --loop from {FIELD}.", field="prompt")
    if not flags.get("end"):
        params.pop(END_FRAME, None)
        return []
    if params["loop"]:
        raise InputError(
            f"A loop ends on its first frame; give either --loop or --end in {FIELD}.",
            field="prompt",
        )
    decoded = load_image(flags["end"], field="prompt", action=Action.VIDEO)
    files = [storage.store_input(data=decoded.data, ext=decoded.format.lower())]
    params[END_FRAME] = True
    params[REFERENCES] = {END_REFERENCE: files}
    return files


def _motion_of(params: dict[str, Any]) -> str:
    return "high" if "high" in str(params.get("variant", "")) else "low"


def _apply(task: Task, step: _SecondStep) -> None:
    if step.prompt is not None:
        task.prompt = step.prompt
    task.prompt_en = step.prompt_en
    task.params = step.params
    if step.seed is not None:
        task.seed = step.seed
    task.properties = {**(task.properties or {}), **step.properties}


def _refuse_second_step(press: PressSpec, modal: ModalInput | None) -> None:
    """A one-step button takes neither a prompt nor a mask: refuse them, never drop them."""
    if modal is None:
        return
    if modal.prompt not in (None, ""):
        raise InputError(
            f"This button takes no {FIELD}: only variations, rerolls and pans (remix) and the "
            f"two-step buttons do. Send the press without it, or start a new task with the "
            f"changed prompt.",
            field="prompt",
        )
    if modal.mask not in (None, ""):
        raise InputError(f"This button takes no {FIELD}; only Vary (Region) does.", field="mask")


def _check_modal_mode(task: Task, *, mode: str | None, path_mode: str | None) -> None:
    """A second step asked for in another mode (``/mj-fast/…/modal`` on a RELAX task)."""
    requested = mode if mode not in (None, "") else path_mode
    if requested not in (None, "") and parse_mode(requested) != task.mode:
        raise InputError(
            f"This task runs in {task.mode} mode; {requested} was requested.",
            field="mode",
            details={"task_mode": task.mode},
        )


# --- the services ----------------------------------------------------------------------------


def task_press(
    *,
    caller: Caller,
    parent_id: str,
    custom_id: str | None = None,
    button: ButtonRef | None = None,
    mode: str | None = None,
    path_mode: str | None = None,
    echo: ClientEcho | None = None,
    modal: ModalInput | None = None,
    remix: bool | None = None,
) -> SubmitOutcome:
    """Press a button of a finished task (U1, V2, zoom …), by ``custom_id`` or ``button``.

    A two-step button waits in MODAL for ``task_submit_modal`` — unless ``modal`` carries the
    second step, when the task is validated in full and accepted in one transaction (a
    rejected mask or prompt leaves no task). A one-step button given a prompt or a mask is
    refused: the caller would otherwise pay for something else than what it asked for.

    Remix: a variation, reroll or pan given a prompt is remixed with it in one go; with remix
    on (``remix``, else remix mode set at the family's submit, else the key's default) and no
    prompt it waits in MODAL for the (changed) prompt, as Midjourney's Remix form does.
    """
    echo = echo or ClientEcho()
    notify_hook = check_hook(echo.notify_hook)
    state = check_state(echo.state)
    parent = _press_parent(caller, parent_id)
    chosen = _chosen(with_implied(buttons_of(parent.buttons)), custom_id=custom_id, button=button)
    pressed = resolve_custom_id(chosen)
    press = pressed.press
    if press is None:  # pragma: no cover - resolve_custom_id always names its row
        raise ValidationFailed("The button cannot be pressed.")
    _check_parent_mode(parent, mode=mode, path_mode=path_mode)
    _check_same_kind(caller, parent, field="parent")
    task = _follow_up(
        caller, parent, pressed, press, state=state, notify_hook=notify_hook, echo=echo
    )
    remix_prompt = modal is not None and modal.prompt not in (None, "")
    if (
        press.modal is None
        and press.remixable
        and (remix_prompt or _remix_on(caller, parent, remix))
    ):
        if modal is not None and modal.mask not in (None, ""):
            _refuse_second_step(press, ModalInput(mask=modal.mask))
        task.params = {**task.params, REMIXED: True}
    elif press.modal is None:
        _refuse_second_step(press, modal)
        return create_and_accept(task, input_files=[])
    elif press.modal == ModalStep.ANIMATE:
        # Midjourney's form for it is the remix form of the animate press (MJ::AnimateModal):
        # an upstream runs it as a remixed press.
        task.params = {**task.params, REMIXED: True, "motion": _motion_of(task.params)}
    task.prompt_en = _starting_prompt(parent, press, pressed.index)
    if press.modal == ModalStep.PROMPT:
        # The new task runs the chosen prompt, not its parent's (a describe has none, a
        # shorten the long one); a prompt given in the second step replaces it.
        task.prompt = task.prompt_en
    task.properties = {"finalPrompt": task.prompt_en}
    if modal is None:
        task.status = Status.MODAL
        with transaction.atomic():
            task.save(force_insert=True)
            task_changed(task=task, event_type="task.created")
        return SubmitOutcome(task, SubmitOutcome.MODAL)
    step = _second_step(task, prompt=modal.prompt, mask=modal.mask)
    _apply(task, step)
    task.status = Status.NOT_START
    return create_and_accept(task, input_files=step.files)


def task_submit_modal(
    *,
    caller: Caller,
    task_id: str,
    prompt: str | None = None,
    mask: Any = None,
    mode: str | None = None,
    path_mode: str | None = None,
) -> SubmitOutcome:
    """Second step of a MODAL task: the mask (vary region) or the prompt (custom zoom …).

    ``mode``/``path_mode``, when given, must be the task's own mode (it was fixed at the
    press); a different one is an error rather than ignored.
    """
    task = task_get(organization=caller.organization, task_id=task_id)
    if task.status != Status.MODAL:
        raise InputError(f"The task is {task.status}, not waiting for input.", field="task")
    _check_same_kind(caller, task, field="task")
    _check_modal_mode(task, mode=mode, path_mode=path_mode)
    step = _second_step(task, prompt=prompt, mask=mask)
    now = timezone.now()
    try:
        with transaction.atomic():
            # The organization's row before the task's (the ledger's order: organization, task
            # rows, balance). The other way round, this step deadlocked with an operator
            # deleting the user who pressed: that locks the user's organizations, then the
            # rows of the tasks the user created (``created_by`` set to NULL). Nothing locks a
            # MODAL task's row and then waits for this lock: its cancel, expiry or an
            # operator's fail takes the organization's row only FOR KEY SHARE (the ledger's
            # release) and, a MODAL task not counting as unfinished, updates no counter on it.
            # The lock reads the task's mode, kind and organization: fixed at the press.
            organization = accept_lock(task)
            locked = Task.objects.select_for_update().get(pk=task.pk)
            if locked.status != Status.MODAL:
                raise ValidationFailed("The task is no longer waiting for input.")
            # The second step first: it can change the price (a draft-mode prompt).
            _apply(locked, step)
            accept(locked, now=now, locked=organization)
            locked.status = Status.NOT_START
            locked.save()
            if not locked.is_test:
                ledger_hold(task=locked, amount=locked.price)
            task_changed(task=locked, event_type="task.updated")
            kick_dispatcher()
    except BaseException:
        discard_files(step.files)
        raise
    return finish_acceptance(locked)
