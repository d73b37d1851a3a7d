"""The ``discord`` engine: one task → interactions with the Midjourney (or Niji) bot.

* **Submit** writes a ``DiscordJob`` row (``prepared``) with a fresh nonce, sends the
  interaction — a slash command (imagine, describe, blend, shorten; ids and versions from the
  guild's command index, cached) or a button press on the parent's result message — and moves
  the row to ``sent``. It then waits a few seconds for the bot's first word, which the gateway
  writes into the row: a refusal (queue full, fast hours out, CAPTCHA …) sends the task back
  to the queue, a rejection (banned prompt, invalid parameter) fails it, a modal is answered
  at once (custom zoom, describe/shorten picks; vary region through the editor's API with the
  mask). ``upstream_job_id`` is the nonce.
* **Find job**: a submit whose worker died is resolved from the row: sent → adopted; still
  ``prepared`` with no ``sending_at`` → its POST never left, so it is sent now; acknowledged by
  Discord on the gateway → adopted; otherwise the channel's recent messages are read back, and
  nothing two minutes after the POST left means the bot never got it (it answers within
  seconds), so submitting again cannot run it twice.
* **Poll** reads the row (the gateway keeps it current) and downloads a finished image at
  once; when the gateway has been silent about a live job for a while it reads the channel
  back over REST itself, so a dead gateway loses nothing.
* **Seed**: the ✉️ reaction on the result; the bot's DM carries the seed.
* **Video** (``video.py`` says how the bot does it): an ``/imagine`` with the start frame and
  ``--video 1``, or the Animate/Extend button; once the bot's video message is there, the poll
  presses its ``U<n>`` button for each clip of the batch and delivers the clips (MP4) with the
  first frame as the poster. The editor and retexture have no Discord command (the methods
  below say why), so those tasks fail with ``UNSUPPORTED_BY_UPSTREAM`` before anything is sent.

Engines are pure adapters: nothing here touches tasks or money; account health changes go
through ``apps.engines.services``.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.db import advisory_xact_lock
from apps.engines.base import (
    Engine,
    Job,
    PermanentEngineError,
    PollResult,
    ResultImage,
    ResultVideo,
    SubmitOutcomeUnknown,
    SubmitResult,
    TemporaryEngineError,
    register,
)

# The sandbox's clip reader: a video's poster is the first frame of its first clip.
from apps.engines.sandbox.video import first_frame
from apps.tasks.enums import Action, ErrorCode, Mode
from apps.tasks.remix import is_remixed

from . import options as discord_options
from . import tracker, video, wire
from .models import LIVE_PHASES, DiscordJob, GatewayLease, Phase
from .options import DiscordSettings
from .rest import CommandOutdated, DiscordRest, InvalidToken, new_nonce

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: A prepared interaction with no trace in the channel after this long never reached the bot.
LOST_SUBMIT_SECONDS = 120
#: A clip of a video batch the bot would not show after this many presses fails the task.
CLIP_PRESSES = 3
#: How long one poll may take to press a clip's button before another may try.
CLIP_LOCK_SECONDS = 30
#: How long a lookup of an interrupted submit waits for Discord's acknowledgement of it.
ACK_WAIT_SECONDS = 4.0
#: A live job the gateway has said nothing about for this long is looked up over REST.
RECOVER_AFTER_SECONDS = 20
SEED_WAIT_SECONDS = 10.0
MODE_FLAGS: dict[str, str] = {Mode.FAST: "--fast", Mode.RELAX: "--relax", Mode.TURBO: "--turbo"}
BLEND_DIMENSIONS = {"PORTRAIT": "--ar 2:3", "SQUARE": "--ar 1:1", "LANDSCAPE": "--ar 3:2"}


def _main_rows(job: Job) -> Any:
    """The task's interactions that run its job (not the presses that show a video's clips)."""
    return DiscordJob.objects.filter(account_id=job.account.id, task_id=job.task_id).exclude(
        command__contains=wire.VIRTUAL_UPSCALE
    )


def _one_send_at_a_time(row: DiscordJob) -> None:
    """Until this transaction commits, no other send of ``row``'s task on its account decides
    whether it may leave (``DiscordEngine._interact``)."""
    advisory_xact_lock(f"discord-send:{row.account_id}:{row.task_id}")


def _press_lost(row: DiscordJob) -> bool:
    """A prepared press nobody is sending any more (the clip lock lasts 30 s) that Discord
    never acknowledged."""
    age = (timezone.now() - (row.sending_at or row.created_at)).total_seconds()
    if row.sending_at is None:
        return age > CLIP_LOCK_SECONDS
    return not row.interaction_id and age > LOST_SUBMIT_SECONDS


def _check_animate_form(row: DiscordJob) -> None:
    """A prompt for an Extend press goes in the bot's Animate form, which it opens only with
    the user's Remix mode on; without it the clip was extended without the prompt."""
    if not video.is_animate_form(row.modal):
        raise PermanentEngineError(
            "The Discord account does not have Remix mode on (Midjourney /settings), so the "
            "prompt for the extension could not be sent; the bot extended the clip without it.",
            error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
        )


def _check_remix_form(row: DiscordJob) -> None:
    """A remixed press must have been answered through the bot's Remix form. The bot opens it
    only when the Discord user has Remix mode on; without it the job runs the old prompt, so
    the task fails rather than deliver that."""
    if not str((row.modal or {}).get("custom_id") or "").startswith("MJ::RemixModal::"):
        raise PermanentEngineError(
            "The Discord account does not have Remix mode on (Midjourney /settings), so the "
            "changed prompt could not be sent; the bot ran the press without it.",
            error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
        )


class DiscordEngine(Engine):
    name: ClassVar[str] = "discord"
    idempotent_submit: ClassVar[bool] = True
    follow_ups_need_parent_account: ClassVar[bool] = True
    seed_from_upstream: ClassVar[bool] = True

    def validate_options(self, options: dict[str, Any], secrets: dict[str, Any]) -> None:
        discord_options.parse(options, secrets)

    def fast_falls_back_to_relax(self, options: Mapping[str, Any]) -> bool:
        return discord_options.falls_back_to_relax(options)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _settings(job: Job) -> DiscordSettings:
        try:
            settings = discord_options.parse(job.account.options, job.account.secrets)
        except ValueError as exc:
            raise TemporaryEngineError(
                f"The discord account is misconfigured: {exc}",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            ) from exc
        # An organization's own account: its addresses are customer input, so every request
        # made for it goes through the SSRF guard (``guard``, ``tracker.download``).
        return replace(settings, guarded=not job.account.operator_managed)

    @staticmethod
    def _gateway(account_id: int) -> GatewayLease | None:
        return GatewayLease.objects.filter(account_id=account_id).first()

    def _session_id(self, account_id: int) -> str:
        lease = self._gateway(account_id)
        return lease.session_id if lease and lease.session_id else uuid.uuid4().hex

    def _user_id(self, account_id: int, rest: DiscordRest) -> str:
        lease = self._gateway(account_id)
        if lease and lease.user_id:
            return lease.user_id
        return str(rest.me().get("id", ""))

    def _listener(self, job: Job, settings: DiscordSettings, rest: DiscordRest) -> tracker.Listener:
        channels = {settings.channel_id, settings.niji_channel_id} - {""}
        return tracker.Listener(
            account_id=job.account.id,
            user_id=self._user_id(job.account.id, rest),
            channels=frozenset(channels),
        )

    # --- submit -------------------------------------------------------------------------------

    def submit(self, job: Job) -> SubmitResult:
        settings = self._settings(job)
        earlier = (
            _main_rows(job)
            .exclude(phase__in=(Phase.REFUSED, Phase.FAILURE))
            .order_by("-created_at")
            .first()
        )
        if earlier is not None and earlier.phase == Phase.PREPARED:
            # An earlier submit of this task stopped half-way: sent or not, it is looked up
            # before anything is sent again.
            earlier = self._resolve_prepared(job, earlier)
        if earlier is not None and earlier.phase not in (Phase.REFUSED, Phase.FAILURE):
            return SubmitResult(upstream_job_id=earlier.nonce, state=tracker.job_state(earlier))
        unfit = tracker.account_unfit(account_id=job.account.id, mode=job.mode)
        if unfit is not None:
            code, reason = unfit
            raise TemporaryEngineError(reason, error_code=code)
        rest = DiscordRest(account_id=job.account.id, settings=settings)
        try:
            row = self._send(job, settings, rest, relax=self._relax_instead(job, settings))
            row = self._confirm(job, row, settings, rest)
        except InvalidToken as exc:
            tracker.account_trouble(
                account_id=job.account.id,
                health="needs_verification",
                reason=f"{exc.message} The account was disabled: enter a fresh token.",
                disable=True,
            )
            raise
        finally:
            rest.close()
        return SubmitResult(upstream_job_id=row.nonce, state=tracker.job_state(row))

    @staticmethod
    def _relax_instead(job: Job, settings: DiscordSettings) -> bool:
        """A FAST job on an account whose fast hours ran out, configured to fall back: it is
        sent in relax at once (the account's health says so until an operator resets it)."""
        return (
            job.mode == Mode.FAST
            and settings.fast_fallback_to_relax
            and tracker.fast_hours_exhausted(account_id=job.account.id)
        )

    def _send(
        self, job: Job, settings: DiscordSettings, rest: DiscordRest, *, relax: bool
    ) -> DiscordJob:
        if job.bot not in settings.bots:
            raise PermanentEngineError(
                f"This account does not serve the {job.bot} bot.",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            )
        if job.action == Action.VIDEO:
            plan = video.plan(job)
            if plan.route == video.EXTEND:
                assert job.parent is not None
                clip = video.clip_message(job.parent.state, plan)
                return self._press(
                    job,
                    settings,
                    rest,
                    pressed=plan.extend_button(),
                    message_id=str(clip.get("message_id") or ""),
                    offered=clip.get("buttons") or [],
                )
            if plan.route == video.ANIMATE:
                return self._press(job, settings, rest, pressed=plan.animate_button())
        elif job.parent is not None and job.custom_id:
            return self._press(job, settings, rest)
        channel = settings.channel_for(job.bot)
        name, command_options, attachments = self._command(job, settings, rest, channel, relax)
        # The command's id and version first: a refusal here (401, 429 for too long) leaves
        # no row behind, since nothing was sent.
        command = rest.command(name, bot=job.bot)
        nonce = new_nonce()
        row = DiscordJob.objects.create(
            nonce=nonce,
            account_id=job.account.id,
            task_id=job.task_id,
            action=job.action,
            command=name,
            bot_id=wire.BOT_IDS[job.bot],
            channel_id=channel,
            prompt=str(command_options[0]["value"]) if name in ("imagine", "shorten") else "",
        )
        for refresh in (False, True):
            if refresh:
                try:
                    command = rest.command(name, bot=job.bot, refresh=True)
                except (TemporaryEngineError, PermanentEngineError) as exc:
                    self._refused(row, exc.message, exc.error_code)
                    raise
            payload = {
                "type": wire.APPLICATION_COMMAND,
                "application_id": command.application_id,
                "guild_id": settings.guild_id,
                "channel_id": channel,
                "session_id": self._session_id(job.account.id),
                "nonce": nonce,
                "data": {
                    "version": command.version,
                    "id": command.id,
                    "name": command.name,
                    "type": 1,
                    "options": command_options,
                    "attachments": attachments,
                },
            }
            try:
                self._interact(rest, row, payload)
                break
            except CommandOutdated:
                if refresh:
                    self._refused(row, "Discord keeps calling the command outdated.")
                    raise TemporaryEngineError(
                        f"Discord calls /{name} outdated even after re-reading the index.",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    ) from None
        return row

    def _command(
        self, job: Job, settings: DiscordSettings, rest: DiscordRest, channel: str, relax: bool
    ) -> tuple[str, list[dict[str, Any]], list[dict[str, str]]]:
        if job.action == Action.VIDEO:
            plan = video.plan(job)
            frame = video.start_frame(job, plan)
            (url,) = self._post_images(job, rest, channel, [frame])
            prompt = video.imagine_prompt(url, job.prompt, plan)
            flag = MODE_FLAGS.get(Mode.RELAX if relax else job.mode, "")
            if flag:
                prompt = f"{prompt} {flag}"
            return "imagine", [{"type": 3, "name": "prompt", "value": prompt}], []
        if job.action == Action.IMAGINE:
            prompt = job.prompt
            if job.images:
                urls = self._image_urls(job, rest, channel)
                prompt = " ".join([*urls, prompt])
            mode = Mode.RELAX if relax else job.mode
            flag = MODE_FLAGS.get(mode, "")
            if flag and not any(f in prompt.split() for f in MODE_FLAGS.values()):
                prompt = f"{prompt} {flag}"
            return "imagine", [{"type": 3, "name": "prompt", "value": prompt}], []
        if job.action == Action.SHORTEN:
            return "shorten", [{"type": 3, "name": "prompt", "value": job.prompt}], []
        if job.action == Action.DESCRIBE:
            attachments = self._uploads(job, rest, channel, 1, 1)
            return "describe", [{"type": 11, "name": "image", "value": 0}], attachments
        if job.action == Action.BLEND:
            attachments = self._uploads(job, rest, channel, 2, 5)
            blend_options: list[dict[str, Any]] = [
                {"type": 11, "name": f"image{n + 1}", "value": n} for n in range(len(attachments))
            ]
            dimensions = BLEND_DIMENSIONS.get(str(job.params.get("dimensions", "SQUARE")).upper())
            if dimensions:
                blend_options.append({"type": 3, "name": "dimensions", "value": dimensions})
            return "blend", blend_options, attachments
        if job.action in (Action.EDIT, Action.RETEXTURE):
            # Midjourney's editor and retexture live on midjourney.com only: the Discord bot has
            # no command or button for them (its Vary (Region) edits a job it made, with a mask
            # in its own editor — our VARIATION press). trueai-org/midjourney-proxy refuses them
            # for Discord accounts too (TaskService.SubmitEdit/SubmitRetexture:
            # "当前账号不支持编辑/重绘任务" — this account type cannot edit or retexture).
            raise PermanentEngineError(
                f"The Midjourney Discord bot has no {job.action.lower()} command (the editor and "
                "retexture are on midjourney.com only); run it on the sandbox or a "
                "midjourney-proxy Plus upstream.",
                error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
            )
        raise PermanentEngineError(
            f"The discord engine cannot run {job.action} (the Midjourney bot has no such command).",
            error_code=ErrorCode.UPSTREAM_REJECTED,
        )

    def _uploads(
        self, job: Job, rest: DiscordRest, channel: str, least: int, most: int
    ) -> list[dict[str, str]]:
        if not least <= len(job.images) <= most:
            raise PermanentEngineError(
                f"{job.action} needs {least}–{most} images, got {len(job.images)}.",
                error_code=ErrorCode.INVALID_PARAMETER,
            )
        attachments = []
        for index, image in enumerate(job.images):
            filename = f"{job.task_id}_{index}.png"
            uploaded = rest.upload(channel, filename, image.read())
            attachments.append(
                {"id": str(index), "filename": filename, "uploaded_filename": uploaded}
            )
        return attachments

    def _image_urls(self, job: Job, rest: DiscordRest, channel: str) -> list[str]:
        """Reference images of an imagine become links: uploaded, posted, their CDN URLs."""
        attachments = self._uploads(job, rest, channel, 1, 5)
        message = rest.post_message(channel, content="", attachments=attachments)
        return [str(item["url"]) for item in message.get("attachments", [])]

    @staticmethod
    def _post_images(job: Job, rest: DiscordRest, channel: str, images: list[bytes]) -> list[str]:
        """Images (a video's start frame) posted in the channel: their CDN links."""
        attachments = []
        for index, data in enumerate(images):
            filename = f"{job.task_id}_frame{index}.png"
            uploaded = rest.upload(channel, filename, data)
            attachments.append(
                {"id": str(index), "filename": filename, "uploaded_filename": uploaded}
            )
        message = rest.post_message(channel, content="", attachments=attachments)
        urls = [str(item["url"]) for item in message.get("attachments", [])]
        if len(urls) != len(images):
            raise TemporaryEngineError(
                "Discord did not return the posted start frame's link.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return urls

    def _press(
        self,
        job: Job,
        settings: DiscordSettings,
        rest: DiscordRest,
        *,
        pressed: str = "",
        message_id: str = "",
        offered: list[Any] | None = None,
    ) -> DiscordJob:
        """Press a button of the parent's message: ``pressed`` (default: the task's own button
        id) on ``message_id`` offering ``offered`` (default: the parent's result message)."""
        parent = job.parent
        assert parent is not None
        return self._press_on(
            job,
            settings,
            rest,
            parent.state,
            pressed=pressed,
            message_id=message_id,
            offered=offered,
        )

    def _press_on(
        self,
        job: Job,
        settings: DiscordSettings,
        rest: DiscordRest,
        state: Mapping[str, Any],
        *,
        pressed: str = "",
        message_id: str = "",
        offered: list[Any] | None = None,
    ) -> DiscordJob:
        """Press a button of the message a job's ``state`` describes (see ``_press``)."""
        message_id = message_id or str(state.get("message_id") or "")
        if state.get("account") != job.account.id or not message_id:
            raise PermanentEngineError(
                "The Discord account that made the parent task is not this one, so its buttons "
                "cannot be pressed here.",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            )
        buttons = state.get("buttons") if offered is None else offered
        available = [str(button.get("custom_id")) for button in buttons or []]
        theirs = wire.their_custom_id(pressed or job.custom_id, available)
        if theirs is None:
            raise PermanentEngineError(
                "The parent's Discord message does not offer this button.",
                error_code=ErrorCode.INVALID_PARAMETER,
            )
        nonce = new_nonce()
        row = DiscordJob.objects.create(
            nonce=nonce,
            account_id=job.account.id,
            task_id=job.task_id,
            action=job.action,
            command=theirs,
            bot_id=str(state.get("bot_id") or wire.MIDJOURNEY_BOT_ID),
            channel_id=str(state.get("channel_id") or settings.channel_id),
            parent_message_id=message_id,
        )
        self._interact(
            rest,
            row,
            {
                "type": wire.MESSAGE_COMPONENT,
                "nonce": nonce,
                "guild_id": settings.guild_id,
                "channel_id": row.channel_id,
                "message_flags": 0,
                "message_id": row.parent_message_id,
                "application_id": row.bot_id,
                "session_id": self._session_id(job.account.id),
                "data": {"component_type": 2, "custom_id": theirs},
            },
        )
        return row

    @staticmethod
    def _interact(rest: DiscordRest, row: DiscordJob, payload: dict[str, Any]) -> None:
        def leaving() -> None:
            # Only from a row still prepared: a look-up that took the task over (this submit
            # outlived its lease) may have closed it as never sent and sends the task itself.
            # And only if no other row of the task's job is being sent or was: a submit slow
            # before its row existed (waiting for the REST turn, an upload, a rate limit) is
            # taken over by one that found no row and sent; the two decide one at a time.
            with transaction.atomic():
                _one_send_at_a_time(row)
                # (A press showing a video's clip is not the task's job: its own lock, the clip
                # lock, keeps it to one at a time.)
                sent_by_another = wire.VIRTUAL_UPSCALE not in row.command and (
                    DiscordJob.objects.filter(account_id=row.account_id, task_id=row.task_id)
                    .exclude(pk=row.pk)
                    .exclude(command__contains=wire.VIRTUAL_UPSCALE)
                    .exclude(phase__in=(Phase.REFUSED, Phase.FAILURE))
                    .filter(Q(sending_at__isnull=False) | ~Q(phase=Phase.PREPARED))
                    .exists()
                )
                if sent_by_another or not DiscordJob.objects.filter(
                    pk=row.pk, phase=Phase.PREPARED
                ).update(sending_at=timezone.now()):
                    raise TemporaryEngineError(
                        "This submit was taken over while it waited; nothing was sent.",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    )

        try:
            rest.interact(payload, before_send=leaving)
        except (TemporaryEngineError, PermanentEngineError) as exc:
            # Discord answered and did not take it: nothing runs, the row is closed. (A stale
            # command version is retried by the caller; an unknown outcome stays prepared.)
            DiscordJob.objects.filter(pk=row.pk, phase=Phase.PREPARED).update(
                phase=Phase.REFUSED, error_code=exc.error_code, fail_reason=exc.message
            )
            raise
        DiscordJob.objects.filter(pk=row.pk, phase=Phase.PREPARED).update(phase=Phase.SENT)

    @staticmethod
    def _close_lost(row: DiscordJob, reason: str) -> bool:
        """Close a press judged lost from ``row`` as read (prepared, never acknowledged), only
        if it is still exactly that: the gateway may record Discord's acknowledgement, or its
        worker write ``sending_at``, between the look and this update. True if it closed it;
        False if the row moved on (it is alive: look again rather than press once more)."""
        return bool(
            DiscordJob.objects.filter(
                pk=row.pk,
                phase=Phase.PREPARED,
                interaction_id="",
                **(
                    {"sending_at__isnull": True}
                    if row.sending_at is None
                    else {"sending_at": row.sending_at}
                ),
            ).update(phase=Phase.REFUSED, error_code=ErrorCode.UPSTREAM_ERROR, fail_reason=reason)
        )

    @staticmethod
    def _refused(row: DiscordJob, reason: str, error_code: str = ErrorCode.UPSTREAM_ERROR) -> None:
        DiscordJob.objects.filter(pk=row.pk).exclude(phase=Phase.SUCCESS).update(
            phase=Phase.REFUSED, error_code=error_code, fail_reason=reason
        )

    def _confirm(
        self, job: Job, row: DiscordJob, settings: DiscordSettings, rest: DiscordRest
    ) -> DiscordJob:
        """Wait briefly for the bot's first word, which decides requeue / fail / modal."""
        deadline = time.monotonic() + settings.submit_confirm_seconds
        while True:
            row.refresh_from_db()
            if row.phase == Phase.MODAL:
                self._answer_modal(job, row, settings, rest)
                row.refresh_from_db()
            if row.phase == Phase.REFUSED:
                return self._after_refusal(job, row, settings, rest)
            if row.phase == Phase.FAILURE:
                raise PermanentEngineError(row.fail_reason, error_code=row.error_code)
            if row.phase in (Phase.RUNNING, Phase.SUCCESS) and is_remixed(job.params):
                _check_remix_form(row)
            if (
                row.phase in (Phase.RUNNING, Phase.SUCCESS)
                and job.action == Action.VIDEO
                and job.params.get("manual")
                and row.command != "imagine"
            ):
                _check_animate_form(row)
            if row.phase in (Phase.RUNNING, Phase.SUCCESS) or time.monotonic() >= deadline:
                return row
            time.sleep(0.1)

    def _after_refusal(
        self, job: Job, row: DiscordJob, settings: DiscordSettings, rest: DiscordRest
    ) -> DiscordJob:
        fall_back = settings.fast_fallback_to_relax and job.parent is None
        if row.error_code == ErrorCode.FAST_HOURS_EXHAUSTED and job.mode == Mode.FAST and fall_back:
            # Fall back as configured: the refused job never ran, so sending it again in
            # relax mode runs it once. The account's health stays "fast hours exhausted" (the
            # operator is told, the admin shows it); the dispatcher still gives it FAST work,
            # which goes out in relax from now on.
            again = self._send(job, settings, rest, relax=True)
            return self._confirm(job, again, settings, rest)
        raise TemporaryEngineError(
            row.fail_reason, error_code=row.error_code or ErrorCode.UPSTREAM_ERROR
        )

    def _answer_modal(
        self, job: Job, row: DiscordJob, settings: DiscordSettings, rest: DiscordRest
    ) -> None:
        """The second step: the prompt (and mask) for the form the bot opened. Sent once."""
        modal = dict(row.modal)
        second = new_nonce()
        claimed = DiscordJob.objects.filter(pk=row.pk, phase=Phase.MODAL).update(
            phase=Phase.MODAL_SENT, second_nonce=second
        )
        if not claimed:
            return
        if modal.get("iframe"):
            try:
                self._submit_inpaint(job, row, settings, rest, modal)
            except TemporaryEngineError:
                # The editor's call was not made (the account's REST turn busy, Discord out of
                # reach, rate limits; an answer that may have started the job is an unknown
                # outcome instead, which leaves the row MODAL_SENT for the bot's answer to
                # settle): the form waits to be answered again, by the next poll
                # of this task or of its retry, which adopts the row. Left MODAL_SENT, nothing
                # would ever answer it and the task ran until its timeout.
                DiscordJob.objects.filter(
                    pk=row.pk, phase=Phase.MODAL_SENT, second_nonce=second
                ).update(phase=Phase.MODAL)
                raise
            except (PermanentEngineError, CommandOutdated) as exc:
                reason = getattr(exc, "message", "The region edit was rejected.")
                DiscordJob.objects.filter(pk=row.pk, phase=Phase.MODAL_SENT).update(
                    phase=Phase.FAILURE, error_code=ErrorCode.UPSTREAM_REJECTED, fail_reason=reason
                )
            return
        fields = modal.get("fields") or []
        payload = {
            "type": wire.MODAL_SUBMIT,
            "application_id": modal.get("application_id") or row.bot_id,
            "channel_id": row.channel_id,
            "guild_id": settings.guild_id,
            "session_id": self._session_id(job.account.id),
            "nonce": second,
            "data": {
                "id": modal.get("id"),
                "custom_id": modal.get("custom_id"),
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {"type": 4, "custom_id": field, "value": self._modal_value(job, modal)}
                        ],
                    }
                    for field in fields[:1]
                ],
            },
        }
        try:
            rest.interact(payload)
        except (TemporaryEngineError, PermanentEngineError, CommandOutdated) as exc:
            reason = getattr(exc, "message", "The modal answer was rejected.")
            DiscordJob.objects.filter(pk=row.pk, phase=Phase.MODAL_SENT).update(
                phase=Phase.FAILURE, error_code=ErrorCode.UPSTREAM_REJECTED, fail_reason=reason
            )

    @staticmethod
    def _modal_value(job: Job, modal: dict[str, Any]) -> str:
        """What the form is answered with: the task's prompt; for an automatic video, the
        prompt the bot filled in itself (the task has none of its own)."""
        if job.action == Action.VIDEO and not job.params.get("manual"):
            return next(iter(modal.get("values") or []), "") or job.prompt
        return job.prompt

    def _submit_inpaint(
        self,
        job: Job,
        row: DiscordJob,
        settings: DiscordSettings,
        rest: DiscordRest,
        modal: dict[str, Any],
    ) -> None:
        if job.mask is None:
            DiscordJob.objects.filter(pk=row.pk).update(
                phase=Phase.FAILURE,
                error_code=ErrorCode.INVALID_PARAMETER,
                fail_reason="Vary (Region) needs a mask.",
            )
            return
        mask = base64.b64encode(job.mask.read()).decode()
        response = rest.request(
            "POST",
            f"{settings.inpaint_base_url}/inpaint/api/submit-job",
            absolute=True,
            route="POST inpaint",
            # It starts a Midjourney job: a 5xx or a timeout after sending is an unknown
            # outcome (the row stays MODAL_SENT for the bot's answer to settle), never a resend.
            once_only=True,
            json={
                "customId": modal.get("custom_id"),
                "prompt": job.prompt,
                "mask": f"data:image/png;base64,{mask}",
                "userId": self._user_id(job.account.id, rest),
                "username": "0",
                "full_prompt": None,
            },
        )
        if response.status_code != 200:
            DiscordJob.objects.filter(pk=row.pk).update(
                phase=Phase.FAILURE,
                error_code=ErrorCode.UPSTREAM_REJECTED,
                fail_reason=f"The vary-region editor refused the job ({response.status_code}).",
            )

    # --- find, poll, seed ---------------------------------------------------------------------

    def find_job(self, job: Job) -> SubmitResult | None:
        row = (
            _main_rows(job)
            .exclude(phase__in=(Phase.REFUSED, Phase.FAILURE))
            .order_by("-created_at")
            .first()
        )
        if row is None:
            return None
        if row.phase == Phase.PREPARED:
            row = self._resolve_prepared(job, row)
            if row is None:
                return None
        if row.phase in (Phase.REFUSED, Phase.FAILURE):
            return None
        return SubmitResult(upstream_job_id=row.nonce, state=tracker.job_state(row))

    def _resolve_prepared(self, job: Job, row: DiscordJob) -> DiscordJob | None:
        """Did a prepared row's interaction reach Discord? The row (adopted) if it did, None
        (the row closed) if it certainly did not; ``SubmitOutcomeUnknown`` while that cannot
        be told yet.

        Never sent (no ``sending_at``: its worker died before the POST left) → closed at once.
        Sent → Discord acknowledges the interaction on the gateway within a second (the
        acknowledgement carries our nonce) and the bot answers within seconds, so the
        gateway's record, or the channel read back, says so; a short wait covers a worker
        that died just after sending. Nothing after ``LOST_SUBMIT_SECONDS`` means the POST
        never arrived. A channel that cannot be read back leaves the question open
        (``SubmitOutcomeUnknown``, never a temporary error: that would requeue the task).
        """
        if row.sending_at is None:
            # Closed only while still unsent: this update and ``_interact``'s ``sending_at``
            # exclude each other, so a submit that was only slow (a threads pool has no hard
            # time limit; it outlived its lease waiting for the REST turn) either finds its
            # row closed and sends nothing, or got there first and its row is looked up below.
            closed = DiscordJob.objects.filter(
                pk=row.pk, phase=Phase.PREPARED, sending_at__isnull=True
            ).update(
                phase=Phase.REFUSED,
                error_code=ErrorCode.UPSTREAM_ERROR,
                fail_reason="The interaction was never sent (its worker stopped before).",
            )
            if closed:
                return None
            row.refresh_from_db()
            if row.phase != Phase.PREPARED:
                return row
            if row.sending_at is None:  # unreachable: the update above would have closed it
                raise SubmitOutcomeUnknown(
                    "The interaction changed while it was looked up; looking again shortly.",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                )
        if not row.interaction_id:
            try:
                settings = self._settings(job)
                rest = DiscordRest(account_id=job.account.id, settings=settings)
                try:
                    self._read_back(job, settings, rest, row.channel_id)
                finally:
                    rest.close()
            except TemporaryEngineError as exc:
                # The channel could not be read (the account's REST turn still held by the
                # dead worker, a rate limit, Discord down): that says nothing about whether
                # the interaction arrived. A temporary error would send the task back to the
                # queue and on to another account, which sends it again while this one may
                # be running.
                raise SubmitOutcomeUnknown(
                    f"Whether the interrupted interaction reached Discord cannot be told yet "
                    f"({exc.message}); looking again shortly.",
                    error_code=exc.error_code,
                ) from exc
            row.refresh_from_db()
        # Sent a moment ago: give Discord's acknowledgement the moment it needs to arrive.
        left = ACK_WAIT_SECONDS - (timezone.now() - row.sending_at).total_seconds()
        deadline = time.monotonic() + min(max(left, 0.0), ACK_WAIT_SECONDS)
        while row.phase == Phase.PREPARED and not row.interaction_id:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
            row.refresh_from_db()
        if row.phase != Phase.PREPARED:
            return row
        if row.interaction_id:
            # Discord took it (the gateway saw the acknowledgement): it is running.
            DiscordJob.objects.filter(pk=row.pk, phase=Phase.PREPARED).update(phase=Phase.SENT)
            row.refresh_from_db()
            return row
        age = (timezone.now() - row.sending_at).total_seconds()
        if age < LOST_SUBMIT_SECONDS:
            raise SubmitOutcomeUnknown(
                "The interaction may still be answered; looking again shortly.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        if self._close_lost(row, "The interaction never reached the bot."):
            return None
        # It moved on between the look and the close: acknowledged (or answered), so it runs
        # after all; or sent once more by its worker, outliving its lease: look again later.
        row.refresh_from_db()
        if row.phase == Phase.PREPARED and not row.interaction_id:
            raise SubmitOutcomeUnknown(
                "The interaction is being sent again; looking again shortly.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        if row.phase == Phase.PREPARED:
            DiscordJob.objects.filter(pk=row.pk, phase=Phase.PREPARED).update(phase=Phase.SENT)
            row.refresh_from_db()
        if row.phase in (Phase.REFUSED, Phase.FAILURE):
            return None
        return row

    def _read_back(
        self, job: Job, settings: DiscordSettings, rest: DiscordRest, channel: str
    ) -> None:
        messages = list(reversed(rest.messages(channel, limit=50)))
        tracker.feed_messages(listener=self._listener(job, settings, rest), messages=messages)

    def poll(self, job: Job) -> PollResult:
        settings = self._settings(job)
        row = DiscordJob.objects.filter(nonce=job.upstream_job_id).first()
        if row is None:
            return PollResult(
                status=PollResult.FAILURE,
                error_code=ErrorCode.UPSTREAM_ERROR,
                fail_reason="The Discord job record is missing.",
            )
        stale = timezone.now() - row.updated_at > timedelta(seconds=RECOVER_AFTER_SECONDS)
        if row.phase == Phase.MODAL or (row.phase in LIVE_PHASES and stale):
            rest = DiscordRest(account_id=job.account.id, settings=settings)
            try:
                if row.phase == Phase.MODAL:
                    self._answer_modal(job, row, settings, rest)
                elif cache.add(f"discord:readback:{row.account_id}:{row.channel_id}", 1, 10):
                    self._read_back(job, settings, rest, row.channel_id)
            finally:
                rest.close()
            row.refresh_from_db()
        try:
            if job.action == Action.VIDEO and row.phase == Phase.SUCCESS:
                return self._video_result(job, row, settings)
            return self._with_fresh_link(
                job, row, settings, lambda current: tracker.result_of(current, settings=settings)
            )
        except (TemporaryEngineError, PermanentEngineError, SubmitOutcomeUnknown):
            # A download that can never succeed (gone, another origin, too large) fails the
            # task; one that may (the network, the CDN's 5xx or 429) is polled again.
            raise
        except Exception as exc:
            raise TemporaryEngineError(
                f"Downloading the result from Discord failed: {exc}",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc

    def _with_fresh_link(
        self,
        job: Job,
        row: DiscordJob,
        settings: DiscordSettings,
        download: Callable[[DiscordJob], T],
    ) -> T:
        """``download(row)`` — the row's result file, an image or a video clip — once more
        with a fresh link when the CDN says the link's file is gone (an expired link)."""
        try:
            return download(row)
        except tracker.ResultGone:
            fresh = self._fresh_image_url(job, row, settings)
            if fresh is None:
                raise
            return download(fresh)

    def _fresh_image_url(
        self, job: Job, row: DiscordJob, settings: DiscordSettings
    ) -> DiscordJob | None:
        """Discord's CDN links are signed and expire: the result message, read again, names
        its file with a fresh link. The row with that link, or None when the message is gone
        or names no other link (the file itself is gone)."""
        if not row.result_message_id:
            return None
        rest = DiscordRest(account_id=job.account.id, settings=settings)
        try:
            message = rest.message(row.channel_id, row.result_message_id)
        finally:
            rest.close()
        url = tracker.result_link(row.action, list((message or {}).get("attachments") or []))
        if not url or url == row.image_url:
            return None
        DiscordJob.objects.filter(pk=row.pk, phase=Phase.SUCCESS).update(image_url=url)
        row.refresh_from_db()
        return row

    # --- video ---------------------------------------------------------------------------------

    def _video_result(self, job: Job, row: DiscordJob, settings: DiscordSettings) -> PollResult:
        """A finished video job: its clips, each from the message the bot shows it alone in
        (pressed here, once per clip), downloaded, with the first frame as the poster."""
        ids = wire.custom_ids(row.components)
        if wire.is_single_clip(ids):
            clips: list[DiscordJob] | None = [row]
        else:
            offered = wire.video_clip_count(ids)
            if not offered:
                raise PermanentEngineError(
                    "The bot's video message offers no clip.", error_code=ErrorCode.UPSTREAM_ERROR
                )
            wanted = min(offered, int(job.params.get("batch_size") or offered))
            clips = self._clip_rows(job, row, settings, wanted)
        if clips is None:
            return replace(
                tracker.result_of(row, settings=None), status=PollResult.RUNNING, progress=99
            )
        data = [
            self._with_fresh_link(
                job, clip, settings, lambda current: tracker.download(current.image_url, settings)
            )
            for clip in clips
        ]
        try:
            poster = first_frame(data[0])
        except ValueError as exc:
            raise PermanentEngineError(
                "The bot's video clip could not be read.", error_code=ErrorCode.UPSTREAM_ERROR
            ) from exc
        state = {
            **tracker.job_state(row),
            "clips": [
                {
                    "message_id": clip.result_message_id,
                    "job_hash": clip.job_hash,
                    "buttons": wire.buttons(clip.components),
                }
                for clip in clips
            ],
        }
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            image=ResultImage(data=poster),
            videos=tuple(ResultVideo(data=clip) for clip in data),
            properties={"batchSize": len(data)},
            seed=row.seed,
            state=state,
        )

    def _clip_rows(
        self, job: Job, row: DiscordJob, settings: DiscordSettings, wanted: int
    ) -> list[DiscordJob] | None:
        """The finished "Video #n" messages of clips 1..``wanted``, or None while some are not
        there yet (the missing ones are asked for: their ``U<n>`` button pressed once)."""
        found: list[DiscordJob] = []
        missing: list[int] = []
        stale = False
        for number in range(1, wanted + 1):
            presses = DiscordJob.objects.filter(
                account_id=job.account.id,
                task_id=job.task_id,
                parent_message_id=row.result_message_id,
                command__contains=f"{wire.VIRTUAL_UPSCALE}{number}::",
            ).order_by("-created_at")
            latest = presses.first()
            if latest is None or latest.phase == Phase.REFUSED:
                if presses.filter(phase=Phase.REFUSED).count() >= CLIP_PRESSES:
                    raise PermanentEngineError(
                        f"The bot would not show clip {number} of the video "
                        f"({latest.fail_reason if latest else 'no answer'}).",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    )
                missing.append(number)
            elif latest.phase == Phase.PREPARED and _press_lost(latest):
                # Its worker stopped before the press left, or it never reached the bot; unless
                # it moved on meanwhile (acknowledged, or its worker sending it after all):
                # then it is pending like any other, and pressed again only if it is lost.
                if self._close_lost(
                    latest, "The press that shows this clip never reached the bot."
                ):
                    missing.append(number)
            elif latest.phase == Phase.FAILURE:
                raise PermanentEngineError(latest.fail_reason, error_code=latest.error_code)
            elif latest.phase == Phase.SUCCESS:
                found.append(latest)
            else:
                stale = stale or (
                    timezone.now() - latest.updated_at > timedelta(seconds=RECOVER_AFTER_SECONDS)
                )
        if not missing and not stale:
            return found if len(found) == wanted else None
        rest = DiscordRest(account_id=job.account.id, settings=settings)
        try:
            if stale and cache.add(f"discord:readback:{row.account_id}:{row.channel_id}", 1, 10):
                self._read_back(job, settings, rest, row.channel_id)
            for number in missing:
                self._show_clip(job, row, settings, rest, number)
        finally:
            rest.close()
        return None

    def _show_clip(
        self,
        job: Job,
        row: DiscordJob,
        settings: DiscordSettings,
        rest: DiscordRest,
        number: int,
    ) -> None:
        """Press ``U<number>`` under the video: the bot posts that clip alone. One press per
        clip at a time: concurrent polls of the task take turns (a short lock in the cache)
        and look again once they hold it."""
        key = f"discord:clip:{row.nonce}:{number}"
        if not cache.add(key, 1, CLIP_LOCK_SECONDS):
            return
        try:
            live = DiscordJob.objects.filter(
                task_id=job.task_id,
                parent_message_id=row.result_message_id,
                command__contains=f"{wire.VIRTUAL_UPSCALE}{number}::",
            ).exclude(phase=Phase.REFUSED)
            if live.exists():
                return
            self._press_on(
                job,
                settings,
                rest,
                tracker.job_state(row),
                pressed=f"MJ::JOB::video_virtual_upscale::{number}::{video.ANY_HASH}",
                message_id=row.result_message_id,
                offered=wire.buttons(row.components),
            )
        finally:
            cache.delete(key)

    def cancel(self, job: Job) -> None:
        """Midjourney cannot stop a running job: it runs out and its result is dropped (the
        lifecycle ignores news about a cancelled task). Nothing is sent to Discord."""

    def image_seed(self, job: Job) -> int | None:
        row = DiscordJob.objects.filter(nonce=job.upstream_job_id).first()
        if row is None or row.phase != Phase.SUCCESS:
            return None
        if row.seed is not None:
            return row.seed
        settings = self._settings(job)
        if cache.add(f"discord:envelope:{row.nonce}", 1, 300):
            rest = DiscordRest(account_id=job.account.id, settings=settings)
            try:
                rest.react(row.channel_id, row.result_message_id, "%E2%9C%89%EF%B8%8F")
            finally:
                rest.close()
        deadline = time.monotonic() + SEED_WAIT_SECONDS
        while time.monotonic() < deadline:
            row.refresh_from_db()
            if row.seed is not None:
                return row.seed
            time.sleep(0.2)
        raise TemporaryEngineError(
            "Midjourney has not sent the seed yet; ask again shortly.",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )


register(DiscordEngine())
