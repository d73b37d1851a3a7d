"""The Midjourney bot, as seen from a Discord channel.

It answers the slash commands (imagine, describe, blend, shorten, fast, relax, turbo), every
button of its result messages, the modals it opens (custom zoom, describe/shorten picks) and the
vary-region editor's submit, the way the real bot does on the wire:

* a reply carrying the interaction's ``nonce`` ("Waiting to start"), edited with "(NN%)" and a
  preview, then deleted and replaced by the result message (grid + buttons with real
  ``MJ::JOB::…`` custom ids, the job hash in the file name);
* upscales come at once as a reply referencing the grid;
* errors are ephemeral embeds with the nonce (banned prompt, invalid parameter, job queue full,
  fast hours exhausted, subscription required, CAPTCHA "Action needed to continue", blocked);
* the ✉️ reaction on a result makes it DM the job id and seed;
* video: ``/imagine <frame link> … --video 1 [--motion low|high] [--bs 1|2|4] [--loop]`` and
  the Animate (High/Low motion) buttons of an upscale answer with a message carrying an MP4
  (``content_type: video/mp4``; the clips side by side) and a ``U<n>`` button per clip
  (``MJ::JOB::video_virtual_upscale::<n>::<hash>``), which posts "Video #n" — that clip alone —
  with its Extend (High/Low motion) buttons. With Remix mode on, Animate and Extend first open
  the ``MJ::AnimateModal`` form. Clips are real H.264 MP4s (``render``).
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import render
from .world import BotJob, FakeUser

if TYPE_CHECKING:
    from .server import FakeDiscord

RED = 16711680
ORANGE = 16239475
BANNED_WORDS = ("bloodbath", "forbiddenword")
KNOWN_PARAMETERS = {
    "ar",
    "aspect",
    "v",
    "version",
    "niji",
    "s",
    "stylize",
    "c",
    "chaos",
    "q",
    "quality",
    "seed",
    "sameseed",
    "no",
    "iw",
    "sref",
    "cref",
    "cw",
    "sw",
    "sv",
    "zoom",
    "tile",
    "style",
    "weird",
    "w",
    "fast",
    "relax",
    "turbo",
    "r",
    "repeat",
    "stop",
    "p",
    "personalize",
    "raw",
    "hd",
    "test",
    "testp",
    "uplight",
    "upbeta",
    "draft",
    "video",
    "motion",
    "bs",
    "loop",
    "end",
}
_VIDEO = re.compile(r"(?:^|\s)--video\b")
_LINK = re.compile(r"<?(https?://[^\s>]+)>?")
#: Buttons that open the remix form when the user has Remix mode on.
REMIXABLE = {
    "variation",
    "low_variation",
    "high_variation",
    "reroll",
    "pan_left",
    "pan_right",
    "pan_up",
    "pan_down",
}
MODE_LABELS = {"fast": "fast", "relax": "relaxed", "turbo": "turbo"}


def _job_hash() -> str:
    return str(uuid.uuid4())


def _button(custom_id: str, *, label: str = "", emoji: str = "", style: int = 2) -> dict[str, Any]:
    button: dict[str, Any] = {"type": 2, "style": style, "custom_id": custom_id}
    if label:
        button["label"] = label
    if emoji:
        button["emoji"] = {"name": emoji}
    return button


def _row(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(buttons)}


def grid_components(job_hash: str) -> list[dict[str, Any]]:
    return [
        _row(
            *(_button(f"MJ::JOB::upsample::{n}::{job_hash}", label=f"U{n}") for n in range(1, 5)),
            _button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", emoji="🔄"),
        ),
        _row(
            *(_button(f"MJ::JOB::variation::{n}::{job_hash}", label=f"V{n}") for n in range(1, 5))
        ),
    ]


def upscale_components(job_hash: str) -> list[dict[str, Any]]:
    return [
        _row(
            _button(
                f"MJ::JOB::upsample_v6_2x_subtle::1::{job_hash}::SOLO", label="Upscale (Subtle)"
            ),
            _button(
                f"MJ::JOB::upsample_v6_2x_creative::1::{job_hash}::SOLO", label="Upscale (Creative)"
            ),
        ),
        _row(
            _button(f"MJ::JOB::low_variation::1::{job_hash}::SOLO", label="Vary (Subtle)"),
            _button(f"MJ::JOB::high_variation::1::{job_hash}::SOLO", label="Vary (Strong)"),
            _button(f"MJ::Inpaint::1::{job_hash}::SOLO", label="Vary (Region)"),
        ),
        _row(
            _button(f"MJ::Outpaint::50::1::{job_hash}::SOLO", label="Zoom Out 2x"),
            _button(f"MJ::Outpaint::75::1::{job_hash}::SOLO", label="Zoom Out 1.5x"),
            _button(f"MJ::CustomZoom::{job_hash}", label="Custom Zoom"),
        ),
        _row(
            *(
                _button(f"MJ::JOB::pan_{side}::1::{job_hash}::SOLO", emoji=emoji)
                for side, emoji in (("left", "⬅️"), ("right", "➡️"), ("up", "⬆️"), ("down", "⬇️"))
            ),
        ),
        _row(
            _button(
                f"MJ::JOB::animate_high::1::{job_hash}::SOLO",
                label="Animate (High motion)",
                emoji="🎞️",
            ),
            _button(
                f"MJ::JOB::animate_low::1::{job_hash}::SOLO",
                label="Animate (Low motion)",
                emoji="🎞️",
            ),
        ),
        _row(_button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", emoji="🔄")),
    ]


def video_components(job_hash: str, clips: int) -> list[dict[str, Any]]:
    return [
        _row(
            *(
                _button(f"MJ::JOB::video_virtual_upscale::{n}::{job_hash}", label=f"U{n}")
                for n in range(1, clips + 1)
            ),
            _button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", emoji="🔄"),
        )
    ]


def clip_components(job_hash: str) -> list[dict[str, Any]]:
    return [
        _row(
            *(
                _button(
                    f"MJ::JOB::animate_{motion}_extend::1::{job_hash}",
                    label=f"Extend ({motion.capitalize()} motion)",
                    emoji="🎞️",
                )
                for motion in ("high", "low")
            )
        )
    ]


def video_prompt(prompt: str, motion: str) -> str:
    """A job's prompt as a video prompt of ``motion`` (earlier video flags replaced)."""
    bare = re.sub(r"\s--(?:motion|video|bs)(?:\s+\w+)?|\s--loop\b", "", f" {prompt}").strip()
    return f"{bare} --motion {motion} --video 1"


def video_options(prompt: str) -> tuple[str, int, bool]:
    """(motion, batch size, loop) of a video prompt; ``BotError`` for values the bot refuses."""
    motion = re.search(r"--motion\s+(\S+)", prompt)
    batch = re.search(r"--bs\s+(\S+)", prompt)
    chosen = motion[1].lower() if motion else "low"
    if chosen not in ("low", "high"):
        raise BotError("Invalid parameter", f"`--motion {chosen}`: use low or high.")
    size = batch[1] if batch else "4"
    if size not in ("1", "2", "4"):
        raise BotError("Invalid parameter", f"`--bs {size}`: a video batch is 1, 2 or 4.")
    return chosen, int(size), bool(re.search(r"(?:^|\s)--loop\b", prompt))


def render_batch(
    *, frame: bytes, clip: bytes, motion: str, batch: int, loop: bool, seed: int
) -> tuple[list[bytes], bytes]:
    """A video job's clips (from ``frame``, or extending ``clip``) and its message's MP4."""
    try:
        clips = [
            render.extend_mp4(clip, motion=motion, seed=f"{seed}:{n}")
            if clip
            else render.clip_mp4(frame, motion=motion, seed=f"{seed}:{n}", loop=loop)
            for n in range(batch)
        ]
    except (ValueError, OSError) as exc:
        raise BotError("Invalid parameter", f"The video could not be made: {exc}") from exc
    return clips, clips[0] if batch == 1 else render.sheet_mp4(clips)


NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


@dataclass(frozen=True)
class Reply:
    """Where and to what the bot answers a press: the user, the bot, the channel, the
    interaction's metadata and the message whose button was pressed."""

    user: FakeUser
    bot_id: str
    channel_id: str
    meta: dict[str, Any]
    message: dict[str, Any]


class BotError(Exception):
    def __init__(self, title: str, description: str, *, colour: int = RED) -> None:
        super().__init__(title)
        self.title = title
        self.description = description
        self.colour = colour


def check_prompt(prompt: str) -> None:
    lowered = prompt.lower()
    for word in BANNED_WORDS:
        if re.search(rf"\b{re.escape(word)}\b", lowered):
            raise BotError(
                "Banned prompt detected",
                f"Sorry! Our AI moderators feel your prompt `{word}` might be against our "
                "community standards.",
                colour=ORANGE,
            )
    for name in re.findall(r"(?:^|\s)--([A-Za-z][\w-]*)", prompt):
        if name.lower() not in KNOWN_PARAMETERS:
            raise BotError("Invalid parameter", f"Unrecognized parameter(s): `--{name}`")


def prompt_mode(prompt: str, user: FakeUser) -> str:
    for mode in ("turbo", "relax", "fast"):
        if re.search(rf"(?:^|\s)--{mode}\b", prompt):
            return mode
    return user.mode


class MidjourneyBot:
    def __init__(self, discord: FakeDiscord, *, step_seconds: float, steps: int) -> None:
        self.discord = discord
        self.step_seconds = step_seconds
        self.steps = steps
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- entry points -------------------------------------------------------------------------

    async def on_command(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        nonce: str,
        interaction_id: str,
        name: str,
        options: dict[str, Any],
        attachments: dict[str, str],
    ) -> None:
        meta = {"id": interaction_id, "name": name, "nonce": nonce, "user_id": user.id}
        try:
            self.account_checks(user)
            if name in ("fast", "relax", "turbo"):
                user.mode = name
                await self.reply_ephemeral(
                    user, bot_id, channel_id, meta, f"Done! Switched to {name} mode."
                )
                return
            if name == "imagine":
                prompt = str(options.get("prompt", ""))
                check_prompt(prompt)
                if _VIDEO.search(prompt):
                    await self.video_from_prompt(user, bot_id, channel_id, meta, prompt)
                else:
                    await self.grid_job(user, bot_id, channel_id, meta, prompt, kind="imagine")
            elif name == "blend":
                urls = [
                    attachments[str(v)] for k, v in sorted(options.items()) if k != "dimensions"
                ]
                ratio = {"--ar 2:3": "2:3", "--ar 1:1": "1:1", "--ar 3:2": "3:2"}.get(
                    str(options.get("dimensions", "")), "1:1"
                )
                prompt = " ".join(f"<{url}>" for url in urls) + f" --ar {ratio}"
                await self.grid_job(user, bot_id, channel_id, meta, prompt, kind="blend")
            elif name == "describe":
                await self.describe(user, bot_id, channel_id, meta, attachments.get("0", ""))
            elif name == "shorten":
                prompt = str(options.get("prompt", ""))
                check_prompt(prompt)
                await self.shorten(user, bot_id, channel_id, meta, prompt)
            else:
                raise BotError("Unknown command", f"/{name} is not a command of this bot.")
        except BotError as error:
            await self.error(user, bot_id, channel_id, meta, error)

    async def on_button(
        self,
        user: FakeUser,
        channel_id: str,
        nonce: str,
        interaction_id: str,
        message: dict[str, Any],
        custom_id: str,
    ) -> None:
        meta = {"id": interaction_id, "name": "", "nonce": nonce, "user_id": user.id}
        job = self.discord.world.bot_jobs.get(message["id"])
        bot_id = message["author"]["id"]
        try:
            if job is None and not custom_id.startswith(("MJ::Job::", "MJ::Picread")):
                raise BotError("Action not allowed", "This job is no longer available.")
            self.account_checks(user)
            await self.press(user, bot_id, channel_id, meta, message, job, custom_id)
        except BotError as error:
            await self.error(user, bot_id, channel_id, meta, error)

    async def on_modal(
        self,
        user: FakeUser,
        channel_id: str,
        nonce: str,
        interaction_id: str,
        modal: dict[str, Any],
        values: dict[str, str],
    ) -> None:
        meta = {"id": interaction_id, "name": "", "nonce": nonce, "user_id": user.id}
        bot_id = modal["bot_id"]
        prompt = next(iter(values.values()), "")
        try:
            self.account_checks(user)
            check_prompt(prompt)
            if modal["kind"] == "animate":
                await self.video_job(
                    user,
                    bot_id,
                    channel_id,
                    meta,
                    video_prompt(prompt or modal["prompt"], modal["motion"]),
                    frame=modal.get("frame", b""),
                    clip=modal.get("clip", b""),
                    reference=modal["reference"],
                )
            elif modal["kind"] == "remix":
                await self.grid_job(
                    user,
                    bot_id,
                    channel_id,
                    meta,
                    prompt,
                    kind="remix",
                    label=modal["label"],
                    reference=modal["reference"],
                )
            elif modal["kind"] == "zoom":
                await self.grid_job(
                    user, bot_id, channel_id, meta, prompt, kind="zoom", label="Zoom Out"
                )
            else:
                await self.grid_job(user, bot_id, channel_id, meta, prompt, kind="imagine")
        except BotError as error:
            await self.error(user, bot_id, channel_id, meta, error)

    async def on_inpaint(self, user: FakeUser, modal: dict[str, Any], prompt: str) -> None:
        meta = {
            "id": modal["interaction_id"],
            "name": "",
            "nonce": modal["nonce"],
            "user_id": user.id,
        }
        try:
            check_prompt(prompt)
            await self.grid_job(
                user,
                modal["bot_id"],
                modal["channel_id"],
                meta,
                prompt or modal["prompt"],
                kind="inpaint",
                label="Variations (Region)",
            )
        except BotError as error:
            await self.error(user, modal["bot_id"], modal["channel_id"], meta, error)

    async def on_envelope(self, user: FakeUser, message: dict[str, Any]) -> None:
        job = self.discord.world.bot_jobs.get(message["id"])
        if job is None:
            return
        channel_id = self.discord.dm_channel(user)
        await self.discord.post_message(
            channel_id,
            author_id=job.bot_id,
            content="",
            embeds=[
                {
                    "title": job.prompt[:200],
                    "description": f"**Job ID**: {job.hash}\n**seed** {job.seed}",
                    "color": ORANGE,
                }
            ],
        )

    # --- checks and replies -------------------------------------------------------------------

    @staticmethod
    def account_checks(user: FakeUser) -> None:
        if user.banned:
            raise BotError("Blocked", "You have been blocked from accessing Midjourney.")
        if not user.subscribed:
            raise BotError(
                "Subscription required", "To use Midjourney you need an active subscription."
            )
        if user.captcha:
            raise BotError(
                "Action needed to continue",
                "Please verify you are human (complete the CAPTCHA) before continuing.",
                colour=ORANGE,
            )

    def mode_checks(self, user: FakeUser, mode: str) -> None:
        if mode in ("fast", "turbo") and user.fast_exhausted:
            raise BotError(
                "Credits exhausted",
                "You are out of fast hours. Use /relax or buy more fast hours.",
            )
        if user.running >= user.queue_limit:
            raise BotError(
                "Job queue full",
                f"You have {user.running} jobs in the queue; wait for one to finish.",
                colour=ORANGE,
            )

    async def error(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], error: BotError
    ) -> None:
        self.discord.world.stats[f"error:{error.title}"] += 1
        await self.discord.post_message(
            channel_id,
            author_id=bot_id,
            content="",
            nonce=meta["nonce"],
            interaction=meta,
            for_user=user,
            flags=64,
            embeds=[
                {
                    "title": error.title,
                    "description": error.description,
                    "color": error.colour,
                    "footer": {"text": "/imagine"},
                }
            ],
        )

    async def reply_ephemeral(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], text: str
    ) -> None:
        await self.discord.post_message(
            channel_id,
            author_id=bot_id,
            content=text,
            nonce=meta["nonce"],
            interaction=meta,
            for_user=user,
            flags=64,
        )

    # --- jobs ---------------------------------------------------------------------------------

    async def press(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        message: dict[str, Any],
        job: BotJob | None,
        custom_id: str,
    ) -> None:
        if job is not None and custom_id not in job.custom_ids:
            raise BotError("Action not allowed", "That button is not on this message.")
        if match := re.fullmatch(r"MJ::JOB::upsample::(\d)::[\w-]+", custom_id):
            assert job is not None
            await self.upscale(user, bot_id, channel_id, meta, message, job, int(match[1]))
            return
        if custom_id.startswith("MJ::CustomZoom::"):
            assert job is not None
            await self.open_modal(
                user,
                bot_id,
                channel_id,
                meta,
                kind="zoom",
                custom_id=f"MJ::OutpaintCustomZoomModal::{job.hash}",
                field="MJ::OutpaintCustomZoomModal::prompt",
                value=f"{job.prompt} --zoom 2",
                title="Zoom Out",
            )
            return
        if custom_id.startswith("MJ::Inpaint::"):
            assert job is not None
            await self.open_inpaint(user, bot_id, channel_id, meta, job)
            return
        if match := re.fullmatch(r"MJ::Job::PicReader::(\d)", custom_id):
            prompts = message.get("_prompts") or []
            await self.open_modal(
                user,
                bot_id,
                channel_id,
                meta,
                kind="imagine",
                custom_id=f"MJ::Picreader::Modal::{match[1]}",
                field="MJ::Picreader::Modal::PromptField",
                value=prompts[int(match[1]) - 1] if prompts else "",
                title="Imagine This!",
            )
            return
        if match := re.fullmatch(r"MJ::Job::PromptAnalyzer::(\d)", custom_id):
            prompts = message.get("_prompts") or []
            await self.open_modal(
                user,
                bot_id,
                channel_id,
                meta,
                kind="imagine",
                custom_id=f"MJ::ImagineModal::{match[1]}",
                field="MJ::ImagineModal::new_prompt",
                value=prompts[int(match[1]) - 1] if prompts else "",
                title="Imagine This!",
            )
            return
        if custom_id == "MJ::Picread::Retry":
            image = (message.get("embeds") or [{}])[0].get("image", {}).get("url", "")
            await self.describe(user, bot_id, channel_id, meta, image)
            return
        assert job is not None
        if await self.press_video(user, bot_id, channel_id, meta, message, job, custom_id):
            return
        labels = {
            "variation": "Variations (Strong) by",
            "low_variation": "Variations (Subtle) by",
            "high_variation": "Variations (Strong) by",
            "reroll": "",
            "upsample_v6_2x_subtle": "Upscaled (Subtle) by",
            "upsample_v6_2x_creative": "Upscaled (Creative) by",
            "pan_left": "Pan Left by",
            "pan_right": "Pan Right by",
            "pan_up": "Pan Up by",
            "pan_down": "Pan Down by",
        }
        if match := re.fullmatch(r"MJ::JOB::(\w+)::(\d)::[\w-]+(?:::SOLO)?", custom_id):
            kind = match[1]
            label = labels.get(kind, "")
            if user.remix and kind in REMIXABLE:
                # Remix mode: the bot asks for the (changed) prompt first.
                await self.open_modal(
                    user,
                    bot_id,
                    channel_id,
                    meta,
                    kind="remix",
                    custom_id=f"MJ::RemixModal::{job.hash}::{match[2]}::{kind}",
                    field="MJ::RemixModal::new_prompt",
                    value=job.prompt,
                    title="Remix Prompt",
                    extra={"label": label.removesuffix(" by"), "reference": message["id"]},
                )
                return
            await self.grid_job(
                user,
                bot_id,
                channel_id,
                meta,
                job.prompt,
                kind=kind,
                label=label.removesuffix(" by"),
                single=kind.startswith("upsample_v6"),
                reference=message["id"],
            )
            return
        if match := re.fullmatch(r"MJ::Outpaint::(\d+)::1::[\w-]+::SOLO", custom_id):
            zoom = "2" if match[1] == "50" else "1.5"
            await self.grid_job(
                user,
                bot_id,
                channel_id,
                meta,
                f"{job.prompt} --zoom {zoom}",
                kind="zoom",
                label="Zoom Out",
                reference=message["id"],
            )
            return
        raise BotError("Action not allowed", f"Unknown button {custom_id}.")

    async def open_modal(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        *,
        kind: str,
        custom_id: str,
        field: str,
        value: str,
        title: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        world = self.discord.world
        modal_id = meta["id"]
        world.modals[modal_id] = {
            **(extra or {}),
            "custom_id": custom_id,
            "kind": kind,
            "bot_id": bot_id,
            "channel_id": channel_id,
            "field": field,
        }
        await self.discord.dispatch_user(
            user,
            "INTERACTION_MODAL_CREATE",
            {
                "id": modal_id,
                "nonce": meta["nonce"],
                "channel_id": channel_id,
                "custom_id": custom_id,
                "title": title,
                "application": {"id": bot_id, "name": "Midjourney Bot"},
                "components": [
                    {"type": 1, "components": [{"type": 4, "custom_id": field, "value": value}]}
                ],
            },
        )

    async def open_inpaint(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], job: BotJob
    ) -> None:
        world = self.discord.world
        token = uuid.uuid4().hex
        world.modals[f"iframe:{token}"] = {
            "kind": "inpaint",
            "bot_id": bot_id,
            "channel_id": channel_id,
            "prompt": job.prompt,
            "interaction_id": meta["id"],
            "nonce": meta["nonce"],
            "user_id": user.id,
        }
        await self.discord.dispatch_user(
            user,
            "INTERACTION_IFRAME_MODAL_CREATE",
            {
                "id": meta["id"],
                "nonce": meta["nonce"],
                "channel_id": channel_id,
                "custom_id": f"MJ::iframe::{token}",
                "title": "Vary (Region)",
                "application": {"id": bot_id, "name": "Midjourney Bot"},
            },
        )

    async def progress_edits(
        self, channel_id: str, message_id: str, head: str, mode: str, job_hash: str
    ) -> None:
        """The running job's message edited ``steps`` times, a blurred preview and a percentage
        each time, ``step_seconds`` apart (as Midjourney's bot shows a job's progress)."""
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.step_seconds)
            percent = int(step * 100 / (self.steps + 1))
            preview = self.discord.store_cdn(
                channel_id, f"{job_hash}_preview.png", render.grid_png(job_hash, progress=0)
            )
            await self.discord.edit_message(
                channel_id,
                message_id,
                content=f"{head} ({percent}%) ({MODE_LABELS[mode]})",
                attachments=[preview],
            )

    async def grid_job(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        prompt: str,
        *,
        kind: str,
        label: str = "",
        single: bool = False,
        reference: str = "",
    ) -> None:
        mode = prompt_mode(prompt, user)
        self.mode_checks(user, mode)
        user.running += 1
        try:
            mention = f"<@{user.id}>"
            head = f"**{prompt}** - " + (f"{label} by {mention}" if label else mention)
            started = await self.discord.post_message(
                channel_id,
                author_id=bot_id,
                content=f"{head} (Waiting to start)",
                nonce=meta["nonce"],
                interaction=meta,
                reference=reference,
            )
            job_hash = _job_hash()
            await self.progress_edits(channel_id, started["id"], head, mode, job_hash)
            await asyncio.sleep(self.step_seconds)
            await self.discord.delete_message(channel_id, started["id"])
            name = (
                f"{user.username}_{re.sub(r'[^a-z0-9]+', '_', prompt.lower())[:40]}_{job_hash}.png"
            )
            picture = render.single_png(job_hash) if single else render.grid_png(job_hash)
            attachment = self.discord.store_cdn(channel_id, name, picture)
            components = upscale_components(job_hash) if single else grid_components(job_hash)
            final = await self.discord.post_message(
                channel_id,
                author_id=bot_id,
                content=f"{head} ({MODE_LABELS[mode]})",
                attachments=[attachment],
                components=components,
                reference=reference,
            )
            self.remember(
                final,
                job_hash,
                prompt,
                user,
                bot_id,
                channel_id,
                not single,
                kind,
                mode,
                image=picture if single else b"",
            )
        finally:
            user.running -= 1

    async def upscale(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        message: dict[str, Any],
        job: BotJob,
        index: int,
    ) -> None:
        self.mode_checks(user, job.mode)
        await asyncio.sleep(self.step_seconds)
        picture = render.single_png(job.hash, index - 1)
        await self.post_alone(
            Reply(user, bot_id, channel_id, meta, message),
            job,
            f"Image #{index}",
            picture,
            video=False,
        )

    # --- video --------------------------------------------------------------------------------

    async def video_from_prompt(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], prompt: str
    ) -> None:
        """``/imagine <frame link> … --video 1``: the first link is the start frame."""
        link = _LINK.search(prompt)
        frame = self.discord.cdn_file(link[1]) if link else None
        if frame is None or not render.is_picture(frame):
            raise BotError("Invalid link", "A video needs a start frame: an image link first.")
        await self.video_job(user, bot_id, channel_id, meta, prompt, frame=frame)

    async def press_video(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        message: dict[str, Any],
        job: BotJob,
        custom_id: str,
    ) -> bool:
        """The video buttons; False when ``custom_id`` is none of them."""
        if match := re.fullmatch(r"MJ::JOB::video_virtual_upscale::(\d)::[\w-]+", custom_id):
            await self.show_clip(user, bot_id, channel_id, meta, message, job, int(match[1]))
            return True
        if job.kind == "video" and custom_id.startswith("MJ::JOB::reroll::"):
            await self.video_job(
                user,
                bot_id,
                channel_id,
                meta,
                job.prompt,
                frame=job.image,
                reference=message["id"],
            )
            return True
        match = re.fullmatch(
            r"MJ::JOB::animate_(high|low)(_extend)?::(\d)::([\w-]+)(?:::SOLO)?", custom_id
        )
        if match is None:
            return False
        motion, extend = match[1], bool(match[2])
        source = {"clip": job.clips[0]} if extend else {"frame": job.image}
        if not next(iter(source.values())):
            raise BotError("Action not allowed", "This message has nothing to animate.")
        if user.remix:
            await self.open_modal(
                user,
                bot_id,
                channel_id,
                meta,
                kind="animate",
                custom_id=f"MJ::AnimateModal::{match[4]}::{match[3]}::{motion}::{int(extend)}",
                field="MJ::AnimateModal::prompt",
                value=video_prompt(job.prompt, motion).removesuffix(" --video 1"),
                title="Animate Prompt",
                extra={
                    "motion": motion,
                    "prompt": job.prompt,
                    "reference": message["id"],
                    **source,
                },
            )
            return True
        await self.video_job(
            user,
            bot_id,
            channel_id,
            meta,
            video_prompt(job.prompt, motion),
            reference=message["id"],
            **source,
        )
        return True

    async def video_job(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        prompt: str,
        *,
        frame: bytes = b"",
        clip: bytes = b"",
        reference: str = "",
    ) -> None:
        """A video job: "Animating..." (the reply carrying the nonce), progress edits of it,
        then the video message."""
        motion, batch, loop = video_options(prompt)
        if clip:
            batch, loop = 4, False  # Extend always makes a batch of four
        mode = prompt_mode(prompt, user)
        self.mode_checks(user, mode)
        user.running += 1
        try:
            head = f"**{prompt}** - <@{user.id}>"
            started = await self.discord.post_message(
                channel_id,
                author_id=bot_id,
                content="Animating...",
                nonce=meta["nonce"],
                interaction=meta,
                reference=reference,
            )
            job_hash = _job_hash()
            seed = random.Random(job_hash).randint(0, 4_294_967_295)
            rendering = asyncio.ensure_future(
                asyncio.to_thread(
                    render_batch,
                    frame=frame,
                    clip=clip,
                    motion=motion,
                    batch=batch,
                    loop=loop,
                    seed=seed,
                )
            )
            await self.progress_edits(channel_id, started["id"], head, mode, job_hash)
            clips, sheet = await rendering
            await asyncio.sleep(self.step_seconds)
            await self.discord.delete_message(channel_id, started["id"])
            attachment = self.discord.store_cdn(
                channel_id, f"{user.username}_{job_hash}.mp4", sheet, content_type="video/mp4"
            )
            final = await self.discord.post_message(
                channel_id,
                author_id=bot_id,
                content=f"{head} ({MODE_LABELS[mode]})",
                attachments=[attachment],
                components=video_components(job_hash, len(clips)),
                reference=reference,
            )
            self.remember(
                final,
                job_hash,
                prompt,
                user,
                bot_id,
                channel_id,
                False,
                "video",
                mode,
                image=frame,
                clips=tuple(clips),
            )
        finally:
            user.running -= 1

    async def show_clip(
        self,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        meta: dict[str, Any],
        message: dict[str, Any],
        job: BotJob,
        index: int,
    ) -> None:
        """``U<n>`` under a video: clip *n* alone, with its Extend buttons (no GPU time)."""
        if not 1 <= index <= len(job.clips):
            raise BotError("Action not allowed", f"This video has no clip {index}.")
        await asyncio.sleep(self.step_seconds)
        await self.post_alone(
            Reply(user, bot_id, channel_id, meta, message),
            job,
            f"Video #{index}",
            job.clips[index - 1],
            video=True,
        )

    async def post_alone(
        self, reply: Reply, job: BotJob, label: str, data: bytes, *, video: bool
    ) -> None:
        """One image (an upscale) or one clip of ``job`` in a message of its own, answering
        the press on ``reply.message``: ``**prompt** - Image #n`` / ``Video #n``, with the
        buttons Midjourney puts under it."""
        job_hash = _job_hash()
        name = f"{reply.user.username}_{job_hash}.{'mp4' if video else 'png'}"
        attachment = self.discord.store_cdn(
            reply.channel_id, name, data, content_type="video/mp4" if video else "image/png"
        )
        final = await self.discord.post_message(
            reply.channel_id,
            author_id=reply.bot_id,
            content=f"**{job.prompt}** - {label} <@{reply.user.id}>",
            attachments=[attachment],
            components=(clip_components if video else upscale_components)(job_hash),
            reference=reply.message["id"],
            interaction=reply.meta,
        )
        self.remember(
            final,
            job_hash,
            job.prompt,
            reply.user,
            reply.bot_id,
            reply.channel_id,
            False,
            "video_clip" if video else "upscale",
            job.mode,
            image=b"" if video else data,
            clips=(data,) if video else (),
        )

    async def describe(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], image_url: str
    ) -> None:
        started = await self.discord.post_message(
            channel_id,
            author_id=bot_id,
            content="",
            nonce=meta["nonce"],
            interaction=meta,
            embeds=[{"image": {"url": image_url}, "description": "Waiting to start"}],
        )
        await asyncio.sleep(self.step_seconds)
        seed = random.Random(image_url).randint(1, 999)
        prompts = [f"a described picture number {seed + n}, soft light --ar 1:1" for n in range(4)]
        description = "\n\n".join(f"{NUMBERS[n]} {text}" for n, text in enumerate(prompts))
        await self.discord.edit_message(
            channel_id,
            started["id"],
            content="",
            embeds=[{"image": {"url": image_url}, "description": description, "color": 0}],
            components=[
                _row(
                    *(_button(f"MJ::Job::PicReader::{n}", label=str(n)) for n in range(1, 5)),
                    _button("MJ::Picread::Retry", emoji="🔄"),
                ),
            ],
            private={"_prompts": prompts},
        )

    async def shorten(
        self, user: FakeUser, bot_id: str, channel_id: str, meta: dict[str, Any], prompt: str
    ) -> None:
        started = await self.discord.post_message(
            channel_id,
            author_id=bot_id,
            content="",
            nonce=meta["nonce"],
            interaction=meta,
            embeds=[{"description": "Analyzing your prompt…"}],
        )
        await asyncio.sleep(self.step_seconds)
        words = [word for word in prompt.split() if not word.startswith("--")]
        prompts = [" ".join(words[: max(1, len(words) - n)]) for n in range(5)]
        description = (
            "**IMPORTANT TOKENS**\n"
            + " ".join(words)
            + "\n\n**SHORTENED OPTIONS**\n"
            + "\n\n".join(f"{NUMBERS[n]} {text}" for n, text in enumerate(prompts))
        )
        await self.discord.edit_message(
            channel_id,
            started["id"],
            content="",
            embeds=[{"description": description}],
            components=[
                _row(*(_button(f"MJ::Job::PromptAnalyzer::{n}", label=str(n)) for n in range(1, 6)))
            ],
            private={"_prompts": prompts},
        )

    def remember(
        self,
        message: dict[str, Any],
        job_hash: str,
        prompt: str,
        user: FakeUser,
        bot_id: str,
        channel_id: str,
        grid: bool,
        kind: str,
        mode: str,
        *,
        image: bytes = b"",
        clips: tuple[bytes, ...] = (),
    ) -> None:
        custom_ids = tuple(
            button["custom_id"]
            for row in message.get("components", [])
            for button in row["components"]
        )
        self.discord.world.bot_jobs[message["id"]] = BotJob(
            hash=job_hash,
            prompt=prompt,
            user_id=user.id,
            bot_id=bot_id,
            channel_id=channel_id,
            seed=random.Random(job_hash).randint(0, 4_294_967_295),
            grid=grid,
            kind=kind,
            mode=mode,
            custom_ids=custom_ids,
            image=image,
            clips=clips,
        )
