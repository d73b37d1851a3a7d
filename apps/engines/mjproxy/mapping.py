"""The midjourney-proxy dialect, as an upstream speaks it to us: pure translations, no I/O.

* :func:`submit_outcome` — an upstream submit answer (``{code, description, result,
  properties}``) → the upstream task id, a MODAL continuation, or the engine error the
  lifecycle understands;
* :func:`upstream_view` — an upstream task JSON (from polling or a callback, the same mapping
  for both) → what it means for our task;
* :func:`upstream_custom_id` — the button a customer pressed on *our* task → the customId of
  the same button on the *upstream's* task.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import ValidationFailed
from apps.engines.base import PermanentEngineError, PollResult
from apps.tasks.buttons import GRID_ACTIONS, ButtonAction, resolve_custom_id
from apps.tasks.enums import Action, ErrorCode
from apps.tasks.prompt import numbered_prompts

#: Accepted and started / accepted and queued.
CODE_SUCCESS = 1
CODE_IN_QUEUE = 22
#: The action needs its second step (``/mj/submit/modal``).
CODE_MODAL = 21
CODE_QUEUE_FULL = 23
CODE_BANNED = 24
CODE_VALIDATION = 4
CODE_NOT_FOUND = 3

RUNNING_STATUSES = frozenset({"NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL"})
MAX_REASON = 500
_NUMBER_MARKS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")
_BANNED_WORDS = ("banned", "sensitive", "敏感", "违禁", "not allowed by our community")


class QueueFull(Exception):
    """Code 23: the upstream accepted nothing and asks us to come back later."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class Accepted:
    """The upstream took the request. ``modal`` means it waits for ``/mj/submit/modal``."""

    job_id: str
    modal: bool = False


def _text(value: Any, limit: int = MAX_REASON) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def submit_outcome(data: Any, *, http_status: int = 200) -> Accepted:
    """Map an upstream submit answer. Raises ``QueueFull`` or ``PermanentEngineError``."""
    if not isinstance(data, Mapping) or "code" not in data:
        raise PermanentEngineError(
            f"The upstream gave an answer we do not understand (HTTP {http_status}).",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )
    try:
        code = int(data.get("code") or -1)
    except (TypeError, ValueError, OverflowError):  # 1e999 parses as inf
        code = -1
    description = _text(data.get("description"))
    result = data.get("result")
    job_id = str(result).strip() if result not in (None, "") else ""
    if code in (CODE_SUCCESS, CODE_IN_QUEUE, CODE_MODAL):
        if not job_id:
            raise PermanentEngineError(
                "The upstream accepted the job but did not say which job it is.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return Accepted(job_id=job_id, modal=code == CODE_MODAL)
    if code == CODE_QUEUE_FULL:
        raise QueueFull(description or "queue full")
    if code == CODE_BANNED:
        properties = data.get("properties") or {}
        word = properties.get("bannedWord") if isinstance(properties, Mapping) else None
        detail = f" ('{_text(word, 100)}')" if word else ""
        raise PermanentEngineError(
            f"The upstream rejected the prompt as banned{detail}: {description or 'banned prompt'}",
            error_code=ErrorCode.BANNED_PROMPT,
        )
    if code == CODE_VALIDATION:
        raise PermanentEngineError(
            f"The upstream rejected the request as invalid: {description or 'validation error'}",
            error_code=ErrorCode.INVALID_PARAMETER,
        )
    if code == CODE_NOT_FOUND:
        raise PermanentEngineError(
            "The upstream no longer knows the parent task"
            + (f": {description}" if description else "."),
            error_code=ErrorCode.UPSTREAM_REJECTED,
        )
    raise PermanentEngineError(
        f"The upstream rejected the request (code {code}): {description or 'no reason given'}",
        error_code=ErrorCode.UPSTREAM_REJECTED,
    )


# --- task status ---------------------------------------------------------------------------------


def parse_progress(value: Any) -> int:
    """``"42%"`` → 42, clamped to 0..100. Anything unreadable (not a string or a number, no
    digits, NaN) is 0; a number too large for a float (``inf``) is 100."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return 0
    if isinstance(value, str):
        match = re.search(r"\d+(?:\.\d+)?", value)
        if match is None:
            return 0
        value = float(match.group(0))  # digits only, yet inf past ~309 of them
    if isinstance(value, float):
        if math.isnan(value):
            return 0
        if math.isinf(value):
            return 100 if value > 0 else 0
        value = int(value)
    return max(0, min(value, 100))


def _shorten_analysis(text: str) -> str:
    first = _NUMBER_MARKS[0]
    return text.split(first, 1)[0].strip() if first in (text or "") else ""


def is_banned_reason(reason: str) -> bool:
    lowered = reason.lower()
    return any(word in lowered for word in _BANNED_WORDS)


@dataclass(frozen=True)
class UpstreamView:
    """What an upstream task JSON says about our task. ``image_url`` is the upstream's own
    address, for our download only: it is never stored on the task or shown to a customer."""

    status: str
    progress: int = 0
    image_url: str = ""
    fail_reason: str = ""
    error_code: str = ""
    is_grid: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    buttons: list[dict[str, Any]] = field(default_factory=list)
    #: A video job's clips (the upstream's addresses, for our download only).
    video_urls: list[str] = field(default_factory=list)

    def poll_result(self) -> PollResult:
        """The result without its image (the engine downloads that)."""
        return PollResult(
            status=self.status,
            progress=self.progress,
            is_grid=self.is_grid,
            properties=dict(self.properties),
            fail_reason=self.fail_reason,
            error_code=self.error_code,
        )


def _string(value: Any) -> str:
    """A text field of the upstream's JSON: anything but a string (a number, a list, an
    object) is malformed and read as absent."""
    return value if isinstance(value, str) else ""


def upstream_buttons(value: Any) -> list[dict[str, Any]]:
    """The upstream's ``buttons``: a list of objects; anything else (a number, a string, an
    object) is malformed and read as none, and items that are not objects are skipped."""
    if not isinstance(value, list):
        return []
    return [dict(button) for button in value if isinstance(button, Mapping)]


def _result_properties(action: str, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Only the prompt text crosses over; upstream ids and CDN links in ``properties`` stay out."""
    properties = upstream.get("properties")
    text = _string(properties.get("finalPrompt")) if isinstance(properties, Mapping) else ""
    if not text and action in (Action.DESCRIBE, Action.SHORTEN):
        # Some proxies put the describe/shorten text in promptEn or prompt.
        text = _string(upstream.get("promptEn")) or _string(upstream.get("prompt"))
    if not text:
        return {}
    out: dict[str, Any] = {"finalPrompt": text}
    if action in (Action.DESCRIBE, Action.SHORTEN):
        out["prompts"] = numbered_prompts(text)
    if action == Action.SHORTEN:
        out["analysis"] = _shorten_analysis(text)
    return out


def _video_urls(value: Any) -> list[str]:
    """trueai-org's ``videoUrls``: ``[{"url": …}]`` (plain strings accepted too)."""
    urls: list[str] = []
    for item in value if isinstance(value, list) else []:
        url = item.get("url") if isinstance(item, Mapping) else item
        if isinstance(url, str) and url.strip():
            urls.append(url.strip())
    return urls


def upstream_view(upstream: Mapping[str, Any], *, action: str) -> UpstreamView:
    """Map one upstream task (poll answer or callback body) for our task of ``action``.

    The JSON is the upstream's word, so every field's type is checked: a malformed one (a
    number where a list or a string belongs, an endless ``progress``) is read as absent and
    the rest applied, never a crash.
    """
    status = _string(upstream.get("status")).upper()
    if status in RUNNING_STATUSES or not status:
        return UpstreamView(
            status=PollResult.RUNNING, progress=min(parse_progress(upstream.get("progress")), 99)
        )
    if status == "SUCCESS":
        return UpstreamView(
            status=PollResult.SUCCESS,
            progress=100,
            image_url=_string(upstream.get("imageUrl")),
            is_grid=action in GRID_ACTIONS,
            properties=_result_properties(action, upstream),
            buttons=upstream_buttons(upstream.get("buttons")),
            video_urls=_video_urls(upstream.get("videoUrls")),
        )
    reason = _text(_string(upstream.get("failReason")))
    if status == "CANCEL":
        return UpstreamView(
            status=PollResult.FAILURE,
            fail_reason="The upstream cancelled the job" + (f": {reason}" if reason else "."),
            error_code=ErrorCode.UPSTREAM_REJECTED,
        )
    # FAILURE, and any status we do not know, is the end of the job.
    if status != "FAILURE":
        reason = reason or f"unknown status {_text(status, 40)}"
    banned = is_banned_reason(reason)
    return UpstreamView(
        status=PollResult.FAILURE,
        fail_reason=(
            f"The upstream rejected the prompt as banned: {reason}"
            if banned
            else f"The upstream failed the job: {reason or 'no reason given'}"
        ),
        error_code=ErrorCode.BANNED_PROMPT if banned else ErrorCode.UPSTREAM_REJECTED,
    )


# --- buttons -------------------------------------------------------------------------------------


def _semantics(action: ButtonAction) -> tuple[Any, ...]:
    variant = action.variant
    # An upstream may offer "Upscale (2x)" where we show "Upscale (Subtle)": different
    # buttons, so the variant stays part of the key.
    return (action.action, variant, action.index, action.zoom_factor, action.pan_direction)


def upstream_custom_id(
    *,
    pressed: str,
    ours: Sequence[Mapping[str, Any]],
    theirs: Sequence[Mapping[str, Any]],
) -> str | None:
    """The upstream's customId for the button ``pressed`` on our copy of the task.

    Our buttons (``ours``, stored: ``custom_id``) carry our own ids (our job hash, our
    spelling); the upstream's (``theirs``, its task JSON: ``customId``) carry its Midjourney
    job hash and maybe another model version's spelling. Matched, in order,
    by meaning (U2 is U2 whatever the hash; ``upsample_v6r1_2x_subtle`` is Upscale (Subtle)),
    then by label and emoji, then by position when both lists have the same shape.
    """
    try:
        wanted = _semantics(resolve_custom_id(pressed))
    except ValidationFailed:
        wanted = None
    if wanted is not None:
        for button in theirs:
            try:
                if _semantics(resolve_custom_id(str(button.get("customId") or ""))) == wanted:
                    return str(button["customId"])
            except ValidationFailed:
                continue
    mine = next((b for b in ours if b.get("custom_id") == pressed), None)
    if mine is None:
        return None
    label, emoji = str(mine.get("label") or ""), str(mine.get("emoji") or "")
    if label:
        same = [
            b
            for b in theirs
            if str(b.get("label") or "") == label and str(b.get("emoji") or "") == emoji
        ]
        if len(same) == 1:
            return str(same[0].get("customId") or "") or None
    if len(ours) == len(theirs):
        position = list(ours).index(mine)
        candidate = theirs[position]
        if (
            str(candidate.get("emoji") or "") == emoji
            and str(candidate.get("label") or "") == label
        ):
            return str(candidate.get("customId") or "") or None
    return None
