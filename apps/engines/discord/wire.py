"""What Discord and the Midjourney bot say on the wire, parsed. Pure functions, no I/O.

Sources: Discord's public API documentation (gateway opcodes, interaction types, message and
component objects) and the message formats the Midjourney bot is publicly documented and
observed to use (``**prompt** - <@user> (NN%) (fast)``, ``MJ::JOB::upsample::1::<hash>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apps.tasks.enums import ErrorCode

MIDJOURNEY_BOT_ID = "936929561302675456"
NIJI_BOT_ID = "1022952195194359889"
BOT_IDS = {"MID_JOURNEY": MIDJOURNEY_BOT_ID, "NIJI_JOURNEY": NIJI_BOT_ID}

# Gateway opcodes.
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
#: Close codes after which a session must not be resumed or retried as is.
CLOSE_AUTHENTICATION_FAILED = 4004
FATAL_CLOSE_CODES = {4004, 4010, 4011, 4012, 4013, 4014}

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
MODAL_SUBMIT = 5
#: Message flag of a reply only its user sees (the bot's error embeds).
EPHEMERAL = 64

_PROGRESS = re.compile(r"\((\d{1,3})%\)")
_HEAD = re.compile(r"^\*\*(?P<prompt>.*?)\*\* - (?P<rest>.*)$", re.DOTALL)
_MENTION = re.compile(r"<@!?(\d+)>")
#: "Image #n" (an upscale of a grid) and "Video #n" (one clip of a video batch).
_IMAGE_INDEX = re.compile(r"(?:Image|Video) #(\d)")
_HASH_PART = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,})$"
)
_SEED = re.compile(r"\*\*seed\*\*\s*(\d+)", re.IGNORECASE)
_FILE_HASH = re.compile(
    r"_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:_\d+)?\.(?:png|webp|jpg|mp4)"
)
#: The button that shows clip *n* of a video batch on its own ("U1" under a video), and the
#: buttons of a single clip: Extend (High/Low motion).
VIRTUAL_UPSCALE = "::video_virtual_upscale::"
_EXTEND = re.compile(r"^MJ::JOB::animate_(?:high|low)_extend::")


@dataclass(frozen=True)
class BotText:
    """A bot message's content: ``**prompt** - [label by] <@user> (status) [(mode)]``."""

    prompt: str
    user_id: str
    progress: int | None
    waiting: bool
    image_index: int | None
    label: str


def parse_content(content: str) -> BotText | None:
    match = _HEAD.match(content.strip())
    if not match:
        return None
    rest = match["rest"]
    mention = _MENTION.search(rest)
    progress = _PROGRESS.search(rest)
    index = _IMAGE_INDEX.search(rest)
    label = rest[: mention.start()].removesuffix(" by ").strip() if mention else ""
    return BotText(
        prompt=match["prompt"],
        user_id=mention.group(1) if mention else "",
        progress=min(100, int(progress.group(1))) if progress else None,
        waiting="(Waiting to start)" in rest or "(Paused" in rest,
        image_index=int(index.group(1)) if index else None,
        label="" if index else label,
    )


def custom_ids(components: list[dict[str, Any]]) -> list[str]:
    return [
        str(button["custom_id"])
        for row in components or []
        for button in row.get("components", [])
        if button.get("custom_id")
    ]


def buttons(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Message components as our buttons: ``{custom_id, emoji, label, type, style}``."""
    found = []
    for row in components or []:
        for button in row.get("components", []):
            if button.get("type") != 2 or not button.get("custom_id"):
                continue
            found.append(
                {
                    "custom_id": str(button["custom_id"]),
                    "emoji": str((button.get("emoji") or {}).get("name", "")),
                    "label": str(button.get("label", "")),
                    "type": 2,
                    "style": int(button.get("style", 2)),
                }
            )
    return found


def signature(custom_id: str) -> str:
    """A custom id without its job hash: what a button *does*, whichever job it is on."""
    return "::".join("*" if _HASH_PART.match(part) else part for part in custom_id.split("::"))


def their_custom_id(pressed: str, available: list[str]) -> str | None:
    """The custom id on the upstream message that does what ``pressed`` (ours) does."""
    if pressed in available:
        return pressed
    wanted = signature(pressed)
    return next((theirs for theirs in available if signature(theirs) == wanted), None)


def job_hash(message: dict[str, Any]) -> str:
    for custom_id in custom_ids(message.get("components") or []):
        for part in custom_id.split("::"):
            if _HASH_PART.match(part):
                return part
    for attachment in message.get("attachments") or []:
        if match := _FILE_HASH.search(str(attachment.get("filename", ""))):
            return match.group(1)
    return ""


def is_modal_button(custom_id: str) -> bool:
    """Buttons whose press opens a form (a modal or the vary-region editor)."""
    return custom_id.startswith(
        ("MJ::CustomZoom::", "MJ::Inpaint::", "MJ::Job::PicReader::", "MJ::Job::PromptAnalyzer::")
    )


def is_video_attachment(attachment: dict[str, Any]) -> bool:
    """An MP4 the bot attached (a video job's clips): by its content type, else its name."""
    kind = str(attachment.get("content_type") or "").lower()
    if kind:
        return kind.startswith("video/")
    return str(attachment.get("filename") or "").lower().endswith(".mp4")


def video_clip_count(custom_ids_on_message: list[str]) -> int:
    """How many clips a video batch message offers (its ``video_virtual_upscale`` buttons)."""
    return sum(1 for custom_id in custom_ids_on_message if VIRTUAL_UPSCALE in custom_id)


def is_single_clip(custom_ids_on_message: list[str]) -> bool:
    """A message showing one clip: it carries the Extend buttons."""
    return any(_EXTEND.match(custom_id) for custom_id in custom_ids_on_message)


def is_grid_result(custom_ids_on_message: list[str]) -> bool:
    return any("::upsample::" in custom_id for custom_id in custom_ids_on_message)


def seed_from(text: str) -> int | None:
    match = _SEED.search(text)
    return int(match.group(1)) if match else None


def embed_text(message: dict[str, Any]) -> str:
    return "\n".join(
        str(embed.get("description") or "") for embed in message.get("embeds") or []
    ).strip()


@dataclass(frozen=True)
class BotFailure:
    """An error embed, classified.

    ``refused``: the bot did not start the job (the task may run elsewhere: requeue);
    ``health``: the account's new health state (an ``apps.engines.models.Health`` value);
    ``disable``: the account must not be used until an operator acts.
    """

    error_code: str
    reason: str
    refused: bool = False
    health: str = ""


def classify_error(title: str, description: str) -> BotFailure:
    text = f"{title}\n{description}".lower()
    shown = f"{title}: {description}".strip(": ")
    if "banned prompt" in text or "against our community standards" in text:
        return BotFailure(ErrorCode.BANNED_PROMPT, f"Midjourney refused the prompt. {description}")
    if "invalid parameter" in text or "unrecognized parameter" in text or "invalid link" in text:
        return BotFailure(
            ErrorCode.INVALID_PARAMETER, f"Midjourney rejected a parameter. {description}"
        )
    if "queue full" in text or "job queued" in text or "concurrent job" in text:
        return BotFailure(
            ErrorCode.UPSTREAM_ERROR, f"The account's job queue is full ({shown}).", refused=True
        )
    if "fast hours" in text or "credits exhausted" in text:
        return BotFailure(
            ErrorCode.FAST_HOURS_EXHAUSTED,
            f"The account ran out of fast hours ({shown}).",
            refused=True,
            health="fast_hours_exhausted",
        )
    if "action needed" in text or "captcha" in text or "verify" in text:
        return BotFailure(
            ErrorCode.NEEDS_VERIFICATION,
            f"Midjourney wants the account verified ({shown}).",
            refused=True,
            health="needs_verification",
        )
    if "subscription" in text:
        return BotFailure(
            ErrorCode.ACCOUNT_UNAVAILABLE,
            f"The account has no Midjourney subscription ({shown}).",
            refused=True,
            health="needs_verification",
        )
    if "blocked" in text or "banned" in text:
        return BotFailure(
            ErrorCode.ACCOUNT_UNAVAILABLE,
            f"Midjourney blocked the account ({shown}).",
            refused=True,
            health="banned",
        )
    if "not allowed" in text or "no longer available" in text:
        return BotFailure(
            ErrorCode.UPSTREAM_REJECTED, f"Midjourney refused the action. {description}"
        )
    return BotFailure(ErrorCode.UPSTREAM_ERROR, f"Midjourney answered with an error: {shown}")


def error_embed(message: dict[str, Any]) -> tuple[str, str] | None:
    """(title, description) when a bot message is an error or warning embed."""
    for embed in message.get("embeds") or []:
        colour = embed.get("color")
        title = str(embed.get("title") or "")
        if colour in (16711680, 16239475) and title and not message.get("components"):
            return title, str(embed.get("description") or "")
    return None
