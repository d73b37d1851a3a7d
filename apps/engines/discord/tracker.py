"""What the bot said, written down: Discord messages and gateway events → ``DiscordJob`` rows,
and rows → the results the lifecycle applies (``PollResult`` / ``JobUpdate``).

The gateway feeds live events in; the engine's REST fallback feeds in the channel's recent
messages when the gateway was away. Both paths go through the same functions and the same
compare-and-set updates, so a message seen twice changes nothing the second time.

How a reply finds its job: the bot's first reply carries our interaction's ``nonce``; replies
without one (results posted as new messages) are matched by the interaction id, the message
they reference and the prompt head the first reply showed, oldest job first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.db.models import Q

from apps.core.db import advisory_xact_lock
from apps.core.http import OutboundHTTPError, ResponseTooLarge, Timeout, UnsafeURL, safe_download
from apps.engines.base import (
    EngineError,
    JobUpdate,
    PermanentEngineError,
    PollResult,
    ResultImage,
    TemporaryEngineError,
)
from apps.engines.models import Health, UpstreamAccount
from apps.engines.services import upstream_account_take_out
from apps.tasks.enums import Action, ErrorCode, Mode

from . import wire
from .models import LIVE_PHASES, DiscordJob, Phase
from .options import DiscordSettings, falls_back_to_relax

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Listener:
    """Whose eyes: the account, its Discord user id, the channels it watches."""

    account_id: int
    user_id: str
    channels: frozenset[str]


def _for_us(listener: Listener, message: dict[str, Any]) -> bool:
    author = str((message.get("author") or {}).get("id", ""))
    if author not in wire.BOT_IDS.values():
        return False
    meta_user = str(((message.get("interaction_metadata") or {}).get("user") or {}).get("id", ""))
    if meta_user:
        return meta_user == listener.user_id
    parsed = wire.parse_content(str(message.get("content") or ""))
    if parsed is not None and parsed.user_id:
        return parsed.user_id == listener.user_id
    return bool(message.get("nonce"))


def _head(text: wire.BotText) -> str:
    return f"{text.prompt}\n{text.label}"


# --- account health --------------------------------------------------------------------------


def account_trouble(*, account_id: int, health: str, reason: str, disable: bool = False) -> None:
    """Record why an account cannot serve (the admin shows ``health_reason``); the operators
    are told by e-mail when it stops serving."""
    upstream_account_take_out(account_id=account_id, health=health, reason=reason, disable=disable)


#: Health states in which an account takes no new interaction (FAST_HOURS_EXHAUSTED: no FAST one).
_HEALTH_CODES: dict[str, str] = {
    Health.FAST_HOURS_EXHAUSTED: ErrorCode.FAST_HOURS_EXHAUSTED,
    Health.NEEDS_VERIFICATION: ErrorCode.NEEDS_VERIFICATION,
    Health.BANNED: ErrorCode.ACCOUNT_UNAVAILABLE,
}


def account_unfit(*, account_id: int, mode: str) -> tuple[str, str] | None:
    """(error code, reason) if the account must not be sent a ``mode`` job now, else None.

    The dispatcher stops giving work to an account once its health changes, but tasks it
    assigned earlier may still be on their way to a worker: they are sent back to the queue
    (and so to a healthy account) instead of reaching Discord from a failed account.
    """
    account = (
        UpstreamAccount.objects.filter(pk=account_id)
        .values("is_enabled", "health", "health_reason", "options")
        .first()
    )
    if account is None:
        return ErrorCode.ACCOUNT_UNAVAILABLE, "The discord account was removed."
    health = account["health"]
    if not account["is_enabled"]:
        return ErrorCode.ACCOUNT_UNAVAILABLE, "The discord account is disabled."
    if health not in _HEALTH_CODES:
        return None
    if health == Health.FAST_HOURS_EXHAUSTED and (
        mode == Mode.RELAX or (mode == Mode.FAST and falls_back_to_relax(account["options"] or {}))
    ):
        return None  # relax work runs on; FAST work too, sent in relax, when so configured
    reason = account["health_reason"] or Health(health).label
    return _HEALTH_CODES[health], f"The discord account is {Health(health).label.lower()}: {reason}"


def fast_hours_exhausted(*, account_id: int) -> bool:
    return UpstreamAccount.objects.filter(
        pk=account_id, health=Health.FAST_HOURS_EXHAUSTED
    ).exists()


# --- events ----------------------------------------------------------------------------------


def interaction_acknowledged(*, listener: Listener, data: dict[str, Any]) -> None:
    DiscordJob.objects.filter(
        account_id=listener.account_id, nonce=str(data.get("nonce", ""))
    ).update(interaction_id=str(data.get("id", "")))


def interaction_failed(*, listener: Listener, data: dict[str, Any]) -> None:
    """The bot did not answer (Discord's INTERACTION_FAILURE): nothing runs, so the job is
    refused — a submit still waiting sends the task back to the queue."""
    nonce = str(data.get("nonce", ""))
    DiscordJob.objects.filter(
        Q(nonce=nonce) | Q(second_nonce=nonce),
        account_id=listener.account_id,
        phase__in=(Phase.PREPARED, Phase.SENT, Phase.MODAL_SENT),
    ).update(
        phase=Phase.REFUSED,
        error_code=ErrorCode.UPSTREAM_ERROR,
        fail_reason="The Midjourney bot did not respond to the interaction.",
    )


def modal_opened(*, listener: Listener, data: dict[str, Any], iframe: bool) -> None:
    inputs = [
        field for row in data.get("components") or [] for field in row.get("components") or []
    ]
    fields = [str(field.get("custom_id")) for field in inputs]
    DiscordJob.objects.filter(
        account_id=listener.account_id,
        nonce=str(data.get("nonce", "")),
        phase__in=(Phase.SENT, Phase.MODAL),
    ).update(
        phase=Phase.MODAL,
        modal={
            "id": str(data.get("id", "")),
            "custom_id": str(data.get("custom_id", "")),
            "fields": fields,
            # What the bot filled in (the job's own prompt): an automatic answer sends it back.
            "values": [str(field.get("value") or "") for field in inputs],
            "iframe": iframe,
            "application_id": str((data.get("application") or {}).get("id", "")),
        },
    )


def message_seen(
    *,
    listener: Listener,
    message: dict[str, Any],
    edited: bool = False,
    settings: DiscordSettings | None = None,
) -> list[JobUpdate]:
    """One MESSAGE_CREATE/UPDATE (or a message read back over REST). With ``settings`` a
    finished job's image is downloaded at once, into the update."""
    channel = str(message.get("channel_id", ""))
    author = str((message.get("author") or {}).get("id", ""))
    if author in wire.BOT_IDS.values() and channel not in listener.channels:
        return _direct_message(listener, message)
    if channel not in listener.channels or not _for_us(listener, message):
        return []
    with transaction.atomic():
        _one_message_at_a_time(listener.account_id)
        job = _job_of(listener, message, edited=edited)
        if job is None:
            return []
        updates = _apply(job, message)
    return [_with_image(update, settings) for update in updates]


def _one_message_at_a_time(account_id: int) -> None:
    """Match the account's messages one at a time, until this transaction commits.

    The gateway and a REST read-back (a quiet job's poll, a look-up of a prepared send) can see
    the same message at once. Matched in parallel, the second looks for the job that took the
    message before the first has committed, finds none, and matches by prompt, waiting on the
    first's job lock, which then skips that (no longer live) job and hands it the next live
    job with the same prompt: another task, maybe another tenant's, got the image. In turn, the
    second's look-up runs after the first's commit and finds the message's job."""
    advisory_xact_lock(f"discord-messages:{account_id}")


def _direct_message(listener: Listener, message: dict[str, Any]) -> list[JobUpdate]:
    """The bot's DM after the ✉️ reaction: ``**Job ID**: <hash> … **seed** N``."""
    text = f"{message.get('content', '')}\n{wire.embed_text(message)}"
    seed = wire.seed_from(text)
    if seed is None:
        return []
    for part in text.replace("*", " ").split():
        DiscordJob.objects.filter(account_id=listener.account_id, job_hash=part).update(seed=seed)
    return []


def _job_of(listener: Listener, message: dict[str, Any], *, edited: bool) -> DiscordJob | None:
    jobs = DiscordJob.objects.select_for_update().filter(account_id=listener.account_id)
    nonce = str(message.get("nonce") or "")
    if nonce:
        found = jobs.filter(Q(nonce=nonce) | Q(second_nonce=nonce)).first()
        if found is not None:
            return found
    message_id = str(message.get("id", ""))
    found = jobs.filter(Q(message_id=message_id) | Q(result_message_id=message_id)).first()
    if found is not None or edited:
        return found
    interaction = str((message.get("interaction_metadata") or {}).get("id", ""))
    live = jobs.filter(phase__in=LIVE_PHASES).order_by("created_at")
    if interaction:
        found = live.filter(interaction_id=interaction).first()
        if found is not None:
            return found
    text = wire.parse_content(str(message.get("content") or ""))
    reference = str((message.get("message_reference") or {}).get("message_id", ""))
    if text is None:
        return None
    unseen = jobs.filter(phase__in=(*LIVE_PHASES, Phase.PREPARED)).order_by("created_at")
    if text.image_index is not None and reference:
        return next(
            (
                job
                for job in unseen.filter(parent_message_id=reference)
                if f"::upsample::{text.image_index}::" in job.command
                or f"{wire.VIRTUAL_UPSCALE}{text.image_index}::" in job.command
            ),
            None,
        )
    found = live.filter(bot_prompt=_head(text)).first()
    if found is not None or text.image_index is not None:
        return found
    # Nothing of this job was seen live (the gateway was away, or the worker died before it
    # heard back): a button pressed on the message this one answers, or the prompt it sent.
    unseen = unseen.filter(bot_prompt="")
    if reference:
        return (
            unseen.filter(parent_message_id=reference)
            .exclude(command__contains="::upsample::")
            .first()
        )
    if text.label:
        return None
    return unseen.filter(prompt=text.prompt, parent_message_id="").first()


def _apply(job: DiscordJob, message: dict[str, Any]) -> list[JobUpdate]:
    error = wire.error_embed(message)
    if error is not None:
        return _failed(job, wire.classify_error(*error))
    if int(message.get("flags") or 0) & wire.EPHEMERAL:
        return []
    text = wire.parse_content(str(message.get("content") or ""))
    components = list(message.get("components") or [])
    attachments = list(message.get("attachments") or [])
    ids = wire.custom_ids(components)
    finished_text = (
        text is not None and text.progress is None and not text.waiting and bool(attachments)
    )
    described = not text and bool(components) and bool(wire.embed_text(message))
    if (finished_text and components) or described:
        return _succeeded(job, message, text, attachments, components, ids)
    changes: dict[str, Any] = {}
    if not job.message_id and message.get("nonce"):
        changes["message_id"] = str(message.get("id", ""))
    if text is not None and not job.bot_prompt:
        changes["bot_prompt"] = _head(text)
    if text is not None and text.progress is not None and text.progress > job.progress:
        changes["progress"] = text.progress
    if job.phase in (Phase.PREPARED, Phase.SENT, Phase.MODAL_SENT):
        changes["phase"] = Phase.RUNNING
    if not changes:
        return []
    DiscordJob.objects.filter(pk=job.pk, phase__in=(*LIVE_PHASES, Phase.PREPARED)).update(**changes)
    return [_update(job.nonce)] if "progress" in changes or "phase" in changes else []


def _succeeded(
    job: DiscordJob,
    message: dict[str, Any],
    text: wire.BotText | None,
    attachments: list[dict[str, Any]],
    components: list[dict[str, Any]],
    ids: list[str],
) -> list[JobUpdate]:
    description = wire.embed_text(message)
    image_url = result_link(job.action, attachments)
    moved = DiscordJob.objects.filter(pk=job.pk, phase__in=(*LIVE_PHASES, Phase.PREPARED)).update(
        phase=Phase.SUCCESS,
        progress=100,
        result_message_id=str(message.get("id", "")),
        image_url=image_url,
        is_grid=wire.is_grid_result(ids),
        components=components,
        job_hash=wire.job_hash(message),
        final_prompt=description if not text else "",
        bot_prompt=job.bot_prompt or (_head(text) if text else ""),
    )
    return [_update(job.nonce)] if moved else []


def result_link(action: str, attachments: list[dict[str, Any]]) -> str:
    """The link to a result message's file: for a video job its MP4 (the clip, or the batch
    side by side), else its first attachment. The live message and the same message read again
    for a fresh link (an expired one) name it alike."""
    files = [item for item in attachments if isinstance(item, dict)]
    videos = [item for item in files if wire.is_video_attachment(item)]
    shown = videos if action == Action.VIDEO and videos else files
    return str(shown[0].get("url") or "") if shown else ""


def _failed(job: DiscordJob, failure: wire.BotFailure) -> list[JobUpdate]:
    phase = Phase.REFUSED if failure.refused else Phase.FAILURE
    moved = DiscordJob.objects.filter(pk=job.pk, phase__in=(*LIVE_PHASES, Phase.PREPARED)).update(
        phase=phase, error_code=failure.error_code, fail_reason=failure.reason
    )
    if failure.health:
        account_trouble(account_id=job.account_id, health=failure.health, reason=failure.reason)
    # A refused job may still be handed to another account by the submit that waits for it;
    # only a real failure is news for the lifecycle.
    return [_update(job.nonce)] if moved and phase == Phase.FAILURE else []


def _with_image(update: JobUpdate, settings: DiscordSettings | None) -> JobUpdate:
    image = update.result.image
    if settings is None or image is None or not image.url:
        return update
    try:
        data = download(image.url, settings)
    except EngineError as exc:
        # The poll downloads it again; the URL stays valid for hours.
        logger.warning("discord result download failed for %s: %s", update.upstream_job_id, exc)
        return update
    return replace(update, result=replace(update.result, image=ResultImage(data=data)))


def _update(nonce: str) -> JobUpdate:
    job = DiscordJob.objects.get(pk=nonce)
    return JobUpdate(
        account_id=job.account_id,
        upstream_job_id=job.nonce,
        task_id=job.task_id,
        result=result_of(job, settings=None),
    )


# --- rows → results --------------------------------------------------------------------------


def job_state(job: DiscordJob) -> dict[str, Any]:
    """The engine's opaque state for the task: what a follow-up needs to press a button."""
    return {
        "account": job.account_id,
        "nonce": job.nonce,
        "channel_id": job.channel_id,
        "bot_id": job.bot_id,
        "message_id": job.result_message_id or job.message_id,
        "job_hash": job.job_hash,
        "buttons": wire.buttons(job.components),
    }


class ResultGone(PermanentEngineError):
    """Discord's CDN says the result's file is not there (403/404/410): the attachment was
    deleted, or its signed link expired. Downloading again cannot help; a fresh link, read
    from the message, might."""


#: A result download's time limits (50 MiB at a modest rate fits in the total).
DOWNLOAD_TIMEOUT = Timeout(connect=10.0, read=30.0, total=120.0)


def _status_error(status: int) -> EngineError:
    """The engine error for a download Discord's CDN answered with ``status`` (not a 2xx).

    A 429 or a 5xx is the CDN's passing trouble: the poll downloads again. Anything else (a
    redirect, which is not followed, or a 4xx) will answer the same next time: the task fails
    with the reason rather than being polled until its timeout, and the account, which did
    nothing wrong, is not counted as failing.
    """
    if status == 429 or status >= 500:
        return TemporaryEngineError(
            f"Discord's CDN answered {status} to the result's download; trying again.",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )
    if status in (403, 404, 410):
        return ResultGone(
            f"Discord's CDN no longer has the result ({status}): the attachment was deleted "
            "or its link expired.",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )
    return PermanentEngineError(
        f"Discord's CDN refused the result's download ({status}).",
        error_code=ErrorCode.UPSTREAM_ERROR,
    )


def _too_large() -> PermanentEngineError:
    return PermanentEngineError(
        f"The result is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB; it was not downloaded.",
        error_code=ErrorCode.UPSTREAM_ERROR,
    )


def download(url: str, settings: DiscordSettings) -> bytes:
    """A result file from Discord's CDN (only from the CDN origins the account names).

    An own account's (``settings.guarded``) goes through the SSRF guard: its CDN address is
    customer input. Raises ``PermanentEngineError`` for what can never be downloaded (another
    origin, an address the guard refuses, a 4xx, more than 50 MiB; ``ResultGone`` for a file
    no longer there) and ``TemporaryEngineError`` for what may pass (the network, a 5xx, 429).
    """
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin not in settings.cdn_origins:
        raise PermanentEngineError(
            f"The result is on {origin}, not the account's CDN; it was not downloaded.",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )
    if settings.guarded:
        return _guarded_download(url)
    return _plain_download(url)


def _guarded_download(url: str) -> bytes:
    try:
        return safe_download(
            url,
            max_bytes=MAX_IMAGE_BYTES,
            timeout=DOWNLOAD_TIMEOUT,
            allow_private=None,  # the installation's setting: refused in production
        )
    except UnsafeURL as exc:
        raise PermanentEngineError(
            f"The result's address is not allowed: {exc.message}",
            error_code=ErrorCode.UPSTREAM_ERROR,
        ) from exc
    except ResponseTooLarge as exc:
        raise _too_large() from exc
    except OutboundHTTPError as exc:
        if exc.status is not None:
            raise _status_error(exc.status) from exc
        raise TemporaryEngineError(
            f"Downloading the result from Discord failed: {exc.message}",
            error_code=ErrorCode.UPSTREAM_ERROR,
        ) from exc


def _plain_download(url: str) -> bytes:
    # httpx is imported here, not with the engine's modules, which every worker process imports
    # at start-up: about 3.5 MiB of each, needed only by one working a discord account
    # (issue 15, P6).
    import httpx

    try:
        with httpx.stream("GET", url, timeout=30.0, follow_redirects=False) as response:
            if not 200 <= response.status_code < 300:
                raise _status_error(response.status_code)
            chunks = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise _too_large()
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise TemporaryEngineError(
            f"Downloading the result from Discord failed ({type(exc).__name__}).",
            error_code=ErrorCode.UPSTREAM_ERROR,
        ) from exc
    return b"".join(chunks)


def result_of(job: DiscordJob, *, settings: DiscordSettings | None) -> PollResult:
    """A row as a poll result. With ``settings`` a finished image is downloaded to bytes at
    once (CDN links expire); without, the URL is handed on."""
    state = job_state(job)
    if job.phase == Phase.SUCCESS and job.action == Action.VIDEO:
        # A video job's clips are gathered by the engine's poll (one message per clip); the
        # bot's result message only says the job is done.
        return PollResult(status=PollResult.SUCCESS, progress=100, state=state)
    if job.phase == Phase.SUCCESS:
        image: ResultImage | None = None
        if job.image_url:
            data = download(job.image_url, settings) if settings is not None else None
            image = ResultImage(data=data) if data is not None else ResultImage(url=job.image_url)
        properties: dict[str, Any] = {}
        if job.final_prompt:
            properties["finalPrompt"] = job.final_prompt
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            image=image,
            is_grid=job.is_grid,
            properties=properties,
            seed=job.seed,
            description=job.final_prompt,
            state=state,
        )
    if job.phase in (Phase.FAILURE, Phase.REFUSED):
        return PollResult(
            status=PollResult.FAILURE,
            fail_reason=job.fail_reason,
            error_code=job.error_code,
            state=state,
        )
    return PollResult(status=PollResult.RUNNING, progress=job.progress, state=state)


def feed_messages(*, listener: Listener, messages: Iterable[dict[str, Any]]) -> int:
    """Messages read back over REST (oldest first), fed as if the gateway had seen them."""
    applied = 0
    for message in messages:
        applied += len(message_seen(listener=listener, message=message))
    return applied
