"""Accepting tasks: validation, the tier limit, the hold, and the two-step MODAL flow.

Everything that can reject a request runs before anything is written; what must be exact
under concurrency — the tier limit and the balance — runs inside one transaction that locks
the organization row, so 200 simultaneous submits on a FREE organization accept exactly 3.
A rejected submit creates no task, stores no file and moves no token.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey
from apps.billing.ledger import ledger_hold
from apps.billing.selectors import price_get
from apps.core.errors import (
    BannedPrompt,
    ConcurrencyLimitReached,
    Conflict,
    NotFound,
    ValidationFailed,
)
from apps.engines.models import UpstreamAccount

from . import prompt as prompts
from . import storage
from .buttons import Button, resolve_custom_id
from .enums import UNFINISHED_STATUSES, Action, ErrorCode, Mode, Status, parse_mode
from .events import task_changed
from .imageinput import DecodedImage, decode_image, is_url
from .lifecycle import (
    NON_TERMINAL,
    kick_dispatcher,
    task_cancel_upstream,
    task_fail,
    task_upstream_seed,
)
from .models import Protocol, Task
from .scheduling import account_pick_other
from .selectors import banned_words_active, task_get, task_queue_position

MAX_PROMPT_LENGTH = 8192
MAX_STATE_LENGTH = 65_536
BLEND_DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")
DOWNLOAD_TIMEOUT = 20


class ParentNotFound(NotFound):
    """The parent of a follow-up does not exist for this organization (mj-proxy code 3)."""

    code = "parent_not_found"
    default_message = "The parent task does not exist."


@dataclass(frozen=True)
class SubmitOutcome:
    """What the protocols report: started (code 1), queued (22) or waiting for input (21)."""

    task: Task
    result: str
    queue_position: int = 0

    STARTED = "started"
    QUEUED = "queued"
    MODAL = "modal"


@dataclass(frozen=True)
class Caller:
    """Who is submitting: the key (API) or the user (dashboard), and the dialect they speak."""

    organization: Organization
    api_key: ApiKey | None = None
    user: Any = None
    protocol: str = Protocol.NATIVE

    @property
    def is_test(self) -> bool:
        return bool(self.api_key and self.api_key.is_test)


@dataclass(frozen=True)
class Delivery:
    """Client data carried through unchanged: the per-task hook, ``state`` and metadata."""

    notify_hook: str = ""
    state: str | None = None
    metadata: dict[str, Any] | None = None


# --- validation helpers ----------------------------------------------------------------------


def _check_banned(text: str) -> None:
    word = prompts.find_banned_word(text, banned_words_active())
    if word is not None:
        raise BannedPrompt(word)


def _parse(prompt: str) -> prompts.ParsedPrompt:
    parsed = prompts.parse_prompt(prompt, max_length=MAX_PROMPT_LENGTH)
    # The whole prompt, parameters included: a banned word hidden in --no is still banned.
    _check_banned(parsed.clean_prompt)
    return parsed


def _resolve_mode(*, requested: str | None, path_mode: str | None, flag: str | None) -> str:
    """Mode by precedence: request field, path prefix, prompt flag, FAST (SPEC §3)."""
    if requested not in (None, ""):
        mode = parse_mode(requested)
        if mode is None:
            raise ValidationFailed(
                f"Unknown mode '{requested}'. Use FAST, RELAX (or NORMAL) or TURBO.",
                details={"field": "mode"},
            )
        return mode
    if path_mode:
        return parse_mode(path_mode) or Mode.FAST
    return flag or Mode.FAST


def _check_tier_mode(organization: Organization, mode: str) -> None:
    if not organization.tier.allows_mode(mode):
        raise ValidationFailed(
            f"The {organization.tier.name} plan does not include {mode} mode.",
            details={"field": "mode", "mode": mode},
        )


def _check_hook(url: str) -> str:
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > 2048 or not url.lower().startswith(("http://", "https://")):
        raise ValidationFailed(
            "The notify hook must be an http(s) URL of at most 2048 characters.",
            details={"field": "notifyHook"},
        )
    # Every delivery runs the full SSRF guard again (after DNS); refusing here what the URL
    # itself shows can never be delivered (localhost, 10.x, 169.254.169.254 …) tells the
    # client now instead of accepting a hook that silently never fires.
    from apps.core.http import UnsafeURL, check_url

    try:
        check_url(url, resolve_host=False)
    except UnsafeURL as exc:
        raise ValidationFailed(
            f"The notify hook is not allowed: {exc.message}", details={"field": "notifyHook"}
        ) from exc
    return url


def _check_state(state: Any) -> str | None:
    if state is None:
        return None
    text = state if isinstance(state, str) else str(state)
    if len(text) > MAX_STATE_LENGTH:
        raise ValidationFailed(
            f"state may be at most {MAX_STATE_LENGTH} characters.", details={"field": "state"}
        )
    return text


def load_image(value: Any, *, field: str) -> DecodedImage:
    """A data URL, bare base64, or an http(s) URL fetched through the SSRF guard."""
    if isinstance(value, str) and is_url(value.strip()):
        from apps.core.http import OutboundHTTPError, Timeout, UnsafeURL, safe_download

        try:
            data = safe_download(
                value.strip(),
                max_bytes=10 * 1024 * 1024,
                timeout=Timeout(connect=5, read=DOWNLOAD_TIMEOUT, total=DOWNLOAD_TIMEOUT),
            )
        except UnsafeURL as exc:
            raise ValidationFailed(f"{field}: {exc}", details={"field": field}) from exc
        except OutboundHTTPError as exc:
            raise ValidationFailed(
                f"{field}: the image could not be downloaded ({exc}).", details={"field": field}
            ) from exc
        value = base64.b64encode(data).decode()
    return decode_image(value, field=field)


def _store_inputs(images: Sequence[DecodedImage]) -> list[str]:
    return [storage.store_input(data=image.data, ext=image.format.lower()) for image in images]


def _discard_files(names: Sequence[str]) -> None:
    for name in names:
        default_storage.delete(name)


# --- acceptance ------------------------------------------------------------------------------


def _new_seed() -> int:
    return secrets.randbelow(4_294_967_295)


def _accept(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: tier limit, hold, event. The organization is locked."""
    # NO KEY UPDATE serialises the submits of one organization without blocking the KEY SHARE
    # lock the ledger (and every foreign key insert) takes on the same row; ``of`` keeps the
    # shared tier row unlocked, or every FREE organization would queue behind one another.
    organization = (
        Organization.objects.select_for_update(no_key=True, of=("self",))
        .select_related("tier")
        .get(pk=task.organization_id)
    )
    unfinished = Task.objects.filter(
        organization_id=organization.pk, status__in=UNFINISHED_STATUSES
    ).count()
    limit = organization.tier.max_unfinished_tasks
    if unfinished >= limit:
        raise ConcurrencyLimitReached(
            f"Your {organization.tier.name} plan allows {limit} unfinished tasks at once; "
            f"wait for one to finish or upgrade your plan.",
            details={"limit": limit, "unfinished": unfinished, "tier": organization.tier.code},
        )
    task.price = 0 if task.is_test else price_get(action=task.action, mode=task.mode)
    task.submitted_at = now
    task.start_deadline = now + settings.TASK_START_DEADLINE


def _finish_acceptance(task: Task) -> SubmitOutcome:
    """After commit: try to start at once (code 1) or report the queue position (code 22)."""
    from .scheduling import dispatch_pending

    try:
        dispatch_pending()
    except Exception:  # the beat safety net dispatches it later; the submit itself succeeded
        import logging

        logging.getLogger(__name__).exception("inline dispatch failed")
    task.refresh_from_db()
    if task.status == Status.NOT_START:
        return SubmitOutcome(task, SubmitOutcome.QUEUED, task_queue_position(task=task))
    return SubmitOutcome(task, SubmitOutcome.STARTED)


def _create_and_accept(task: Task, *, input_files: Sequence[str]) -> SubmitOutcome:
    now = timezone.now()
    try:
        with transaction.atomic():
            _accept(task, now=now)
            task.save(force_insert=True)
            if not task.is_test:
                ledger_hold(task=task, amount=task.price)
            task_changed(task=task, event_type="task.created")
            kick_dispatcher()
    except BaseException:
        _discard_files(input_files)
        raise
    return _finish_acceptance(task)


def task_submit(
    *,
    caller: Caller,
    action: str,
    prompt: str = "",
    images: Sequence[Any] = (),
    mode: str | None = None,
    path_mode: str | None = None,
    dimensions: str | None = None,
    delivery: Delivery | None = None,
) -> SubmitOutcome:
    """Accept a new (non follow-up) task: IMAGINE, DESCRIBE, BLEND, SHORTEN or SWAP_FACE."""
    delivery = delivery or Delivery()
    notify_hook = _check_hook(delivery.notify_hook)
    state = _check_state(delivery.state)
    action = (action or "").upper()
    params: dict[str, Any] = {}
    parsed: prompts.ParsedPrompt | None = None
    decoded: list[DecodedImage] = []
    if action == Action.IMAGINE:
        parsed = _parse(prompt)
        if len(images) > 5:
            raise ValidationFailed(
                f"base64Array may contain at most 5 reference images; got {len(images)}.",
                details={"field": "base64Array"},
            )
        decoded = [load_image(v, field=f"base64Array[{i}]") for i, v in enumerate(images)]
    elif action == Action.SHORTEN:
        parsed = _parse(prompt)
    elif action == Action.DESCRIBE:
        if len(images) != 1:
            raise ValidationFailed("Describe needs exactly one image.", details={"field": "base64"})
        decoded = [load_image(images[0], field="base64")]
    elif action == Action.BLEND:
        if not 2 <= len(images) <= 5:
            raise ValidationFailed(
                f"base64Array must contain between 2 and 5 images; got {len(images)}.",
                details={"field": "base64Array", "count": len(images)},
            )
        decoded = [load_image(v, field=f"base64Array[{i}]") for i, v in enumerate(images)]
        dims = (dimensions or "SQUARE").upper()
        if dims not in BLEND_DIMENSIONS:
            raise ValidationFailed(
                f"dimensions must be PORTRAIT, SQUARE or LANDSCAPE; got '{dimensions}'.",
                details={"field": "dimensions"},
            )
        params["dimensions"] = dims
    elif action == Action.SWAP_FACE:
        if len(images) != 2:
            raise ValidationFailed(
                "Face swap needs a source and a target image.", details={"field": "sourceBase64"}
            )
        decoded = [
            load_image(images[0], field="sourceBase64"),
            load_image(images[1], field="targetBase64"),
        ]
    else:
        raise ValidationFailed(
            f"Unknown action '{action}'. Use IMAGINE, DESCRIBE, BLEND, SHORTEN or SWAP_FACE; "
            f"follow-ups (upscale, variation …) are submitted with a parent task and a button.",
            details={"field": "action"},
        )
    chosen_mode = _resolve_mode(
        requested=mode, path_mode=path_mode, flag=parsed.mode_flag if parsed else None
    )
    _check_tier_mode(caller.organization, chosen_mode)
    seed = prompts.seed(parsed) if parsed is not None else None
    input_files = _store_inputs(decoded)
    task = Task(
        organization=caller.organization,
        api_key=caller.api_key,
        created_by=caller.user,
        is_test=caller.is_test,
        protocol=caller.protocol,
        action=action,
        status=Status.NOT_START,
        mode=chosen_mode,
        prompt=(prompt or "").strip(),
        prompt_en=parsed.clean_prompt if parsed else "",
        state=state,
        params=params,
        metadata=delivery.metadata or {},
        inputs=input_files,
        notify_hook=notify_hook,
        seed=seed if seed is not None else _new_seed(),
        properties={"finalPrompt": parsed.clean_prompt if parsed else ""},
    )
    return _create_and_accept(task, input_files=input_files)


# --- follow-ups ------------------------------------------------------------------------------

_FOLLOW_UP_ACTION = {
    "picreader": Action.IMAGINE,
    "prompt_analyzer": Action.IMAGINE,
    "picread_retry": Action.DESCRIBE,
}


_NUMBER_MARK_RE = re.compile("([1-5])\ufe0f\u20e3")


def numbered_prompts(text: str) -> list[str]:
    """The prompts of a ``1️⃣ … 2️⃣ …`` list, as DESCRIBE and SHORTEN results carry them."""
    parts = _NUMBER_MARK_RE.split(text or "")
    found: list[str] = []
    for index in range(1, len(parts) - 1, 2):
        candidate = " ".join(parts[index + 1].split())
        if candidate:
            found.append(candidate)
    return found


def _modal_prompt(parent: Task, variant: str, index: int | None) -> str:
    """The prompt a MODAL follow-up starts with; the client may replace it in step two."""
    if variant in ("picreader", "prompt_analyzer"):
        properties = parent.properties or {}
        # Engines that keep the list use ``prompts``; otherwise read the numbered finalPrompt.
        candidates = [str(p) for p in properties.get("prompts") or []] or numbered_prompts(
            str(properties.get("finalPrompt") or "")
        )
        if index is None or not 1 <= index <= len(candidates):
            raise ValidationFailed(
                "The parent task has no prompt with that number.", details={"field": "customId"}
            )
        return candidates[index - 1]
    if variant == "custom_zoom":
        return f"{parent.prompt_en} --zoom 2".strip()
    return parent.prompt_en


def task_submit_followup(
    *,
    caller: Caller,
    parent_id: str,
    custom_id: str,
    mode: str | None = None,
    path_mode: str | None = None,
    delivery: Delivery | None = None,
) -> SubmitOutcome:
    """Press a button of a finished task (U1, V2, zoom …). MODAL buttons wait for step two."""
    delivery = delivery or Delivery()
    notify_hook = _check_hook(delivery.notify_hook)
    state = _check_state(delivery.state)
    try:
        parent = task_get(organization=caller.organization, task_id=parent_id)
    except NotFound as exc:
        raise ParentNotFound("The parent task does not exist.") from exc
    if parent.status != Status.SUCCESS:
        raise ValidationFailed(
            f"The parent task is {parent.status}; buttons work only on a task that succeeded.",
            details={"field": "taskId", "status": parent.status},
        )
    custom_id = (custom_id or "").strip()
    available = [Button.from_dict(b) for b in parent.buttons or []]
    if custom_id not in {b.custom_id for b in available}:
        offered = ", ".join(b.custom_id for b in available) or "none"
        raise ValidationFailed(
            f"The parent task has no button '{custom_id}'. It offers: {offered}.",
            details={"field": "customId"},
        )
    pressed = resolve_custom_id(custom_id)
    requested = mode if mode not in (None, "") else path_mode
    if requested not in (None, ""):
        wanted = parse_mode(requested)
        if wanted != parent.mode:
            raise ValidationFailed(
                f"Follow-ups run in the parent's mode ({parent.mode}); {requested} was requested.",
                details={"field": "mode", "parent_mode": parent.mode},
            )
    if caller.is_test != parent.is_test:
        raise ValidationFailed(
            "Test-mode and live tasks cannot be mixed: use a key of the same kind as the parent.",
            details={"field": "taskId"},
        )
    action = _FOLLOW_UP_ACTION.get(pressed.variant, pressed.action)
    params: dict[str, Any] = {
        "variant": pressed.variant,
        "index": pressed.index,
        "custom_id": custom_id,
    }
    if pressed.zoom_factor is not None:
        params["zoom_factor"] = pressed.zoom_factor
    if pressed.pan_direction is not None:
        params["pan_direction"] = pressed.pan_direction
    inputs: list[str] = []
    if action == Action.DESCRIBE:
        inputs = list(parent.inputs)
    elif action == Action.REROLL:
        # A reroll runs the job that made the grid again with a new seed: a blend needs its
        # images and dimensions back, an imagine its reference images.
        inputs = list(parent.inputs)
        params["reroll_of"] = (parent.params or {}).get("reroll_of") or parent.action
        if "dimensions" in (parent.params or {}):
            params["dimensions"] = parent.params["dimensions"]
    task = Task(
        organization=caller.organization,
        api_key=caller.api_key,
        created_by=caller.user,
        is_test=parent.is_test,
        protocol=caller.protocol,
        action=action,
        mode=parent.mode,
        parent=parent,
        custom_id=custom_id,
        prompt=parent.prompt,
        prompt_en=parent.prompt_en,
        state=state,
        params=params,
        metadata=delivery.metadata or {},
        inputs=inputs,
        notify_hook=notify_hook,
        seed=_new_seed(),
        properties={"finalPrompt": parent.prompt_en},
    )
    if pressed.requires_modal:
        task.status = Status.MODAL
        task.prompt_en = _modal_prompt(parent, pressed.variant, pressed.index)
        task.properties = {"finalPrompt": task.prompt_en}
        with transaction.atomic():
            task.save(force_insert=True)
            task_changed(task=task, event_type="task.created")
        return SubmitOutcome(task, SubmitOutcome.MODAL)
    return _create_and_accept(task, input_files=[])


def task_submit_modal(
    *,
    caller: Caller,
    task_id: str,
    prompt: str | None = None,
    mask: Any = None,
) -> SubmitOutcome:
    """Second step of a MODAL action: the mask (vary region) or the prompt (custom zoom …)."""
    task = task_get(organization=caller.organization, task_id=task_id)
    if task.status != Status.MODAL:
        raise ValidationFailed(
            f"The task is {task.status}, not waiting for input.", details={"field": "taskId"}
        )
    if caller.is_test != task.is_test:
        raise ValidationFailed(
            "Test-mode and live tasks cannot be mixed: use a key of the same kind as the parent.",
            details={"field": "taskId"},
        )
    variant = (task.params or {}).get("variant", "")
    text = (prompt if prompt not in (None, "") else task.prompt_en) or ""
    if variant == "custom_zoom" and text.strip().startswith("--") and task.parent is not None:
        # Clients often send just "--zoom 1.5": the description stays the parent's.
        text = f"{task.parent.prompt_en} {text.strip()}"
    parsed = _parse(text)
    if parsed.mode_flag is not None and parsed.mode_flag != task.mode:
        raise ValidationFailed(
            f"Follow-ups run in the parent's mode ({task.mode}); the prompt asks for "
            f"{parsed.mode_flag}.",
            details={"field": "prompt", "parent_mode": task.mode},
        )
    params = dict(task.params or {})
    files: list[str] = []
    if variant == "custom_zoom":
        factor = prompts.zoom(parsed)
        if factor is None:
            raise ValidationFailed(
                "Custom zoom needs a prompt with --zoom between 1 and 2.",
                details={"field": "prompt"},
            )
        params["zoom_factor"] = factor
    if variant == "inpaint":
        if mask in (None, ""):
            raise ValidationFailed(
                "Vary (Region) needs maskBase64: the area to change, white on black.",
                details={"field": "maskBase64"},
            )
        decoded_mask = load_image(mask, field="maskBase64")
        files = [storage.store_input(data=decoded_mask.data, ext=decoded_mask.format.lower())]
        params["mask"] = files[0]
    now = timezone.now()
    try:
        with transaction.atomic():
            locked = Task.objects.select_for_update().get(pk=task.pk)
            if locked.status != Status.MODAL:
                raise ValidationFailed("The task is no longer waiting for input.")
            _accept(locked, now=now)
            locked.status = Status.NOT_START
            locked.prompt = text if prompt not in (None, "") else locked.prompt
            locked.prompt_en = parsed.clean_prompt
            locked.params = params
            chosen_seed = prompts.seed(parsed)
            if chosen_seed is not None:
                locked.seed = chosen_seed
            locked.properties = {**(locked.properties or {}), "finalPrompt": parsed.clean_prompt}
            locked.save()
            if not locked.is_test:
                ledger_hold(task=locked, amount=locked.price)
            task_changed(task=locked, event_type="task.updated")
            kick_dispatcher()
    except BaseException:
        _discard_files(files)
        raise
    return _finish_acceptance(locked)


# --- cancel ----------------------------------------------------------------------------------


def task_cancel(
    *, organization: Organization, task_id: str, reason: str = "Cancelled by the customer."
) -> Task:
    """Cancel a task that has not finished; its hold is released. Finished tasks are final.

    ``reason`` is what the customer reads as the task's failReason (an operator's cancel says
    so, rather than blaming the customer).
    """
    task = task_get(organization=organization, task_id=task_id)
    if task.is_terminal:
        raise ValidationFailed(
            f"The task already finished with status {task.status}.", details={"field": "taskId"}
        )
    cancelled = task_fail(
        task_id=task.pk,
        reason=reason,
        error_code=ErrorCode.CANCELLED,
        from_statuses=NON_TERMINAL,
        status=Status.CANCEL,
    )
    task.refresh_from_db()
    if not cancelled and not task.status == Status.CANCEL:
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    if cancelled:
        _cancel_upstream_job(task)
    return task


def _cancel_upstream_job(task: Task) -> None:
    """Best effort: stop the job ``task`` started upstream, if it started one."""
    task_cancel_upstream(task=task)


# --- operator actions (the admin) ------------------------------------------------------------

OPERATOR_FAIL_REASON = "Failed by an operator."


def _operator_task(task_id: str) -> Task:
    task = (
        Task.objects.select_related("parent", "upstream_account", "organization")
        .filter(pk=str(task_id))
        .first()
    )
    if task is None:
        raise NotFound("Task not found.")
    return task


def task_fail_by_operator(*, task_id: str, reason: str = OPERATOR_FAIL_REASON) -> Task:
    """Fail an unfinished task (errorCode OPERATOR_FAILED) and release its hold.

    For tasks stuck upstream: the customer is not charged, the upstream job is asked to stop,
    and the account's slot frees up. ``reason`` is the customer-facing failReason; why the
    operator did it belongs in the audit log.
    """
    task = _operator_task(task_id)
    if task.is_terminal:
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    failed = task_fail(
        task_id=task.pk,
        reason=reason,
        error_code=ErrorCode.OPERATOR_FAILED,
        from_statuses=NON_TERMINAL,
    )
    if not failed:
        task.refresh_from_db()
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    _cancel_upstream_job(task)
    task.refresh_from_db()
    return task


@dataclass(frozen=True)
class RetryOutcome:
    """Where a retried task went. ``task`` carries the work now: the same task moved to
    ``account``, or — for a task that had already failed — a new task (``retry_of`` is the old
    one, which stays FAILURE: a finished task never changes again)."""

    task: Task
    account: UpstreamAccount
    previous_account_id: int | None
    retry_of: Task | None = None


def _pick_other_account(task: Task, *, exclude: int | None, now: datetime) -> UpstreamAccount:
    """The least busy usable account of the task's pool with a free slot, other than
    ``exclude``; locked like the dispatcher locks it, so the slot cannot be taken twice."""
    return account_pick_other(task, exclude=exclude, now=now)


def _check_retryable(task: Task) -> None:
    if task.status in (Status.NOT_START, Status.MODAL):
        raise ValidationFailed(
            f"The task is {task.status}: it has no account yet, the dispatcher will place it."
        )
    if task.status in (Status.SUCCESS, Status.CANCEL):
        raise ValidationFailed(f"The task finished with status {task.status}; nothing to retry.")
    parent = task.parent
    if parent is not None and parent.upstream_account_id:
        from apps.engines.base import get_engine

        if get_engine(parent.engine or "sandbox").follow_ups_need_parent_account:
            raise ValidationFailed("This follow-up can only run on its parent's upstream account.")


def task_retry_on_another_account(*, task_id: str) -> RetryOutcome:
    """Run a task on another upstream account than the one it is stuck or failed on.

    An unfinished task (assigned, or running upstream) keeps its id and its hold: it is moved
    to another account with a free slot and submitted there; the old upstream job is asked to
    stop. A task that already failed is finished for good, so a new task with the same input
    is accepted in its place (tier limit and hold as for any submit) and sent to another
    account. Either way nothing changes unless another account has a free slot right now.
    """
    task = _operator_task(task_id)
    _check_retryable(task)
    if task.status == Status.FAILURE:
        return _retry_as_new_task(task)
    return _move_to_another_account(task)


def _move_to_another_account(task: Task) -> RetryOutcome:
    from .lifecycle import _enqueue_start, start_lease

    now = timezone.now()
    previous = task.upstream_account
    with transaction.atomic():
        account = _pick_other_account(task, exclude=task.upstream_account_id, now=now)
        moved = Task.objects.filter(
            pk=task.pk,
            status=task.status,
            upstream_account_id=task.upstream_account_id,
            submit_claimed_at=task.submit_claimed_at,
            poll_token=task.poll_token,
        ).update(
            status=Status.SUBMITTED,
            upstream_account=account,
            engine=account.engine,
            upstream_job_id="",
            engine_state={},
            submit_claimed_at=None,
            poll_token="",  # the old poll chain stops at its next step
            progress=0,
            started_at=None,
            lease_expires_at=start_lease(now),
            run_deadline=now + timedelta(seconds=account.run_timeout_seconds),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if not moved:
            raise Conflict("The task changed while it was being moved; nothing was changed.")
        moved_task = Task.objects.select_related("upstream_account").get(pk=task.pk)
        task_changed(task=moved_task, event_type="task.updated")
        _enqueue_start(task.pk)
    _cancel_upstream_job(task)  # ``task`` still carries the old account and job id
    return RetryOutcome(
        task=moved_task,
        account=account,
        previous_account_id=previous.pk if previous is not None else None,
    )


def _retry_as_new_task(failed: Task) -> RetryOutcome:
    from .lifecycle import _enqueue_start, start_lease

    now = timezone.now()
    task = Task(
        organization=failed.organization,
        api_key=failed.api_key,
        created_by=failed.created_by,
        is_test=failed.is_test,
        protocol=failed.protocol,
        action=failed.action,
        mode=failed.mode,
        parent=failed.parent,
        custom_id=failed.custom_id,
        prompt=failed.prompt,
        prompt_en=failed.prompt_en,
        state=failed.state,
        params=dict(failed.params or {}),
        metadata=dict(failed.metadata or {}),
        inputs=list(failed.inputs or []),
        notify_hook=failed.notify_hook,
        seed=failed.seed,
        properties={"finalPrompt": (failed.properties or {}).get("finalPrompt", "")},
        # Internal only (never serialised): lets an operator follow the chain of retries.
        engine_state={"retry_of": failed.pk},
    )
    with transaction.atomic():
        _accept(task, now=now)  # locks the organization: tier limit and price, as a submit
        account = _pick_other_account(task, exclude=failed.upstream_account_id, now=now)
        task.status = Status.SUBMITTED
        task.upstream_account = account
        task.engine = account.engine
        task.lease_expires_at = start_lease(now)
        task.run_deadline = now + timedelta(seconds=account.run_timeout_seconds)
        task.save(force_insert=True)
        if not task.is_test:
            ledger_hold(task=task, amount=task.price)
        task_changed(task=task, event_type="task.created")
        _enqueue_start(task.pk)
    return RetryOutcome(
        task=task,
        account=account,
        previous_account_id=failed.upstream_account_id,
        retry_of=failed,
    )


# --- seeds -----------------------------------------------------------------------------------


def task_image_seed(*, organization: Organization, task_id: str) -> int | None:
    """The seed of a task's image (``GET /mj/task/{id}/image-seed``, TTAPI ``seed``).

    For engines whose upstream picks the seed it is asked once, when a client first wants it
    for a finished task, and kept on the task; until then, and for unfinished tasks, the seed
    is unknown (None) unless the prompt fixed it. Other engines know it from the start.
    """
    task = task_get(organization=organization, task_id=task_id)
    return task_upstream_seed(task=task)
