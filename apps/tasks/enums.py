"""Vocabulary of the task domain, shared by models, services, engines and protocols."""

from __future__ import annotations

from django.db import models


class Action(models.TextChoices):
    IMAGINE = "IMAGINE", "Imagine"
    UPSCALE = "UPSCALE", "Upscale"
    VARIATION = "VARIATION", "Variation"
    REROLL = "REROLL", "Reroll"
    ZOOM = "ZOOM", "Zoom"
    PAN = "PAN", "Pan"
    DESCRIBE = "DESCRIBE", "Describe"
    BLEND = "BLEND", "Blend"
    SHORTEN = "SHORTEN", "Shorten"
    SWAP_FACE = "SWAP_FACE", "Swap face"
    #: Animate an image into short MP4 clips (from a start frame, an upscale, or extending a video).
    VIDEO = "VIDEO", "Video"
    #: The editor: repaint the masked part of an image (inpaint, or outpaint on a canvas).
    EDIT = "EDIT", "Edit"
    #: Retexture: the image's shapes kept, its surfaces restyled by the prompt.
    RETEXTURE = "RETEXTURE", "Retexture"


#: Price keys beyond one per action: variants of an action priced on their own.
IMAGINE_DRAFT = "IMAGINE_DRAFT"
#: HD (720p) video: Midjourney spends about 3.2x the GPU time of an SD clip on it.
VIDEO_HD = "VIDEO_HD"
EXTRA_PRICE_KEYS: tuple[tuple[str, str], ...] = (
    (IMAGINE_DRAFT, "Imagine (draft mode)"),
    (VIDEO_HD, "Video (HD 720p)"),
)
#: Every key a price row may have: the actions and the extra keys.
PRICE_KEY_CHOICES: list[tuple[str, str]] = [*Action.choices, *EXTRA_PRICE_KEYS]


class Status(models.TextChoices):
    NOT_START = "NOT_START", "Queued"
    SUBMITTED = "SUBMITTED", "Submitted"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    MODAL = "MODAL", "Waiting for input"
    SUCCESS = "SUCCESS", "Succeeded"
    FAILURE = "FAILURE", "Failed"
    CANCEL = "CANCEL", "Cancelled"


#: Tasks in these statuses count against the tier limit (SPEC §1).
UNFINISHED_STATUSES: tuple[str, ...] = (Status.NOT_START, Status.SUBMITTED, Status.IN_PROGRESS)
#: A task in one of these never changes again (SPEC §4.2).
TERMINAL_STATUSES: tuple[str, ...] = (Status.SUCCESS, Status.FAILURE, Status.CANCEL)


class Mode(models.TextChoices):
    FAST = "FAST", "Fast"
    RELAX = "RELAX", "Relax"
    TURBO = "TURBO", "Turbo"


#: Names clients use for a mode, mapped to ours. OhMyGPT calls RELAX "NORMAL".
MODE_ALIASES: dict[str, str] = {
    "FAST": Mode.FAST,
    "RELAX": Mode.RELAX,
    "NORMAL": Mode.RELAX,
    "TURBO": Mode.TURBO,
}


def parse_mode(value: str | None) -> str | None:
    """Return the canonical mode for a client-supplied name (case-insensitive), or None."""
    if value is None:
        return None
    return MODE_ALIASES.get(str(value).strip().upper())


class Pool(models.TextChoices):
    """Whose upstream accounts may run a task (bring-your-own accounts, issue #18).

    ``shared``: the platform's pool only; ``own``: only accounts the task's organization added
    itself (charged the platform fee); ``own_then_shared``: its own accounts first, the shared
    pool when none of them has a free slot (the normal price is held; the fee is charged when
    one of its own accounts ran it).
    """

    SHARED = "shared", "Shared pool"
    OWN = "own", "Own accounts only"
    OWN_THEN_SHARED = "own_then_shared", "Own accounts, then the shared pool"


def parse_pool(value: str | None) -> str | None:
    """The pool a client named (case-insensitive, ``-`` for ``_``), or None if unknown."""
    if value is None:
        return None
    text = str(value).strip().lower().replace("-", "_")
    return text if text in Pool.values else None


class ErrorCode(models.TextChoices):
    BANNED_PROMPT = "BANNED_PROMPT", "Banned prompt"
    TIMEOUT = "TIMEOUT", "Timed out"
    UPSTREAM_REJECTED = "UPSTREAM_REJECTED", "Rejected upstream"
    UPSTREAM_ERROR = "UPSTREAM_ERROR", "Upstream error"
    ACCOUNT_UNAVAILABLE = "ACCOUNT_UNAVAILABLE", "No upstream account available"
    INVALID_PARAMETER = "INVALID_PARAMETER", "Invalid parameter"
    CANCELLED = "CANCELLED", "Cancelled"
    WORKER_LOST = "WORKER_LOST", "Worker lost"
    OPERATOR_FAILED = "OPERATOR_FAILED", "Failed by an operator"
    INTERNAL_ERROR = "INTERNAL_ERROR", "Internal error"
    #: The upstream account ran out of fast hours (a FAST job it could not take).
    FAST_HOURS_EXHAUSTED = "FAST_HOURS_EXHAUSTED", "Fast hours exhausted"
    #: The upstream account must be verified by a person (CAPTCHA, "action needed").
    NEEDS_VERIFICATION = "NEEDS_VERIFICATION", "Needs verification"
    #: The upstream (its version or kind, a midjourney-proxy without the Plus routes, …) has no
    #: way to run this action or feature (video, remix, edits …).
    UNSUPPORTED_BY_UPSTREAM = "UNSUPPORTED_BY_UPSTREAM", "Unsupported by the upstream"
