"""Who is calling and the checks every accepting service runs on its input, before any write.

Errors name domain fields (``images``, ``mask``, ``hook_url``, ``state``, ``mode``); each
dialect renders them under its own names (``apps.tasks.errors``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import default_storage
from django.utils import timezone

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey
from apps.core.errors import BannedPrompt, ValidationFailed
from apps.core.http import (
    OutboundHTTPError,
    ResponseTooLarge,
    Timeout,
    UnsafeURL,
    check_url,
    safe_download,
)
from apps.engines.selectors import upstream_account_owned_usable

from .. import prompt as prompts
from .. import storage
from ..enums import Mode, Pool, parse_mode, parse_pool
from ..errors import FIELD, InputError
from ..imageinput import DecodedImage, decode_image, is_url
from ..models import Protocol
from ..selectors import banned_words_active

MAX_PROMPT_LENGTH = 8192
MAX_STATE_LENGTH = 65_536
MAX_HOOK_LENGTH = 2048
DOWNLOAD_TIMEOUT = 20
MAX_DOWNLOAD_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Caller:
    """Who is submitting: the key (API) or the user (dashboard), and the dialect they speak."""

    organization: Organization
    api_key: ApiKey | None = None
    user: Any = None
    protocol: str = Protocol.NATIVE
    #: The pool the request asked for (a header, the native ``pool`` field); None: the key's.
    pool: str | None = None

    @property
    def is_test(self) -> bool:
        return bool(self.api_key and self.api_key.is_test)


@dataclass(frozen=True)
class ClientEcho:
    """What the client asked us to echo back: the per-task hook URL, ``state`` and metadata.

    (Named apart from ``apps.webhooks.models.WebhookDelivery``, one attempt to send an event.)
    """

    notify_hook: str = ""
    state: str | None = None
    metadata: dict[str, Any] | None = None


def check_banned(text: str) -> None:
    word = prompts.find_banned_word(text, banned_words_active())
    if word is not None:
        raise BannedPrompt(word)


def parse_checked(prompt: str, *, allow_zoom: bool = False) -> prompts.ParsedPrompt:
    """Parse a prompt and refuse a banned word anywhere in it.

    ``--zoom`` belongs to Custom Zoom's second step only (``allow_zoom``): on any other prompt
    Midjourney would not zoom, so it is refused rather than passed along and charged.
    """
    parsed = prompts.parse_prompt(prompt, max_length=MAX_PROMPT_LENGTH)
    if not allow_zoom and parsed.has("zoom"):
        raise ValidationFailed(
            "--zoom works only with Custom Zoom (press it on an upscaled image); remove it "
            "from this prompt.",
            details={"parameter": "--zoom"},
        )
    # The whole prompt, parameters included: a banned word hidden in --no is still banned.
    check_banned(parsed.clean_prompt)
    return parsed


def resolve_mode(*, requested: str | None, path_mode: str | None, flag: str | None) -> str:
    """Mode by precedence: request field, path prefix, prompt flag, FAST (SPEC §3)."""
    if requested not in (None, ""):
        mode = parse_mode(requested)
        if mode is None:
            raise InputError(
                f"Unknown mode '{requested}'. Use FAST, RELAX (or NORMAL) or TURBO.", field="mode"
            )
        return mode
    if path_mode:
        return parse_mode(path_mode) or Mode.FAST
    return flag or Mode.FAST


def check_tier_mode(organization: Organization, mode: str) -> None:
    if not organization.tier.allows_mode(mode):
        raise InputError(
            f"The {organization.tier.name} plan does not include {mode} mode.",
            field="mode",
            details={"mode": mode},
        )


def resolve_pool(caller: Caller, *, mode: str) -> str:
    """Whose upstream accounts run the new task: the request's choice, else the key's default,
    else the shared pool. Refused — before anything is written — when the name is unknown,
    the plan does not include own accounts, or ``own`` is asked for and none of the
    organization's own accounts may take ``mode`` work now. Test keys always run on the
    built-in sandbox: their choice is checked but the task goes to the sandbox."""
    if caller.pool not in (None, ""):
        chosen = parse_pool(caller.pool)
        if chosen is None:
            raise InputError(
                f"Unknown pool '{caller.pool}' in {FIELD}. Use shared, own or own_then_shared.",
                field="pool",
            )
    else:
        chosen = caller.api_key.pool if caller.api_key is not None else Pool.SHARED
    if chosen == Pool.SHARED:
        return Pool.SHARED
    tier = caller.organization.tier
    if not tier.allows_own_accounts:
        raise InputError(
            f"The {tier.name} plan does not include your own upstream accounts, so {FIELD} "
            f"cannot be {chosen}; use the shared pool or upgrade your plan.",
            field="pool",
            code="pool_not_allowed",
            details={"pool": chosen, "tier": tier.code},
        )
    if caller.is_test:
        return Pool.SHARED
    if chosen == Pool.OWN and not upstream_account_owned_usable(
        organization_id=caller.organization.pk, mode=mode, now=timezone.now()
    ):
        raise InputError(
            f"{FIELD} is own, but none of your organization's own upstream accounts is enabled, "
            f"healthy and serving {mode} mode; add or enable one, or use own_then_shared or "
            f"the shared pool.",
            field="pool",
            code="no_own_account",
            details={"pool": chosen, "mode": mode},
        )
    return chosen


def follow_up_pool(parent: Any) -> str:
    """A follow-up (a button, a video of a task) runs where its parent's job lives: in the
    own pool when one of the organization's own accounts ran the parent (and is charged its
    fee), else in the shared pool. The request's pool choice applies to new tasks only."""
    account = parent.upstream_account if parent.upstream_account_id else None
    if account is not None and account.owner_id == parent.organization_id:
        return Pool.OWN
    return Pool.SHARED


def check_hook(url: str) -> str:
    """The per-task hook URL, refused now if the URL itself shows it can never be delivered."""
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > MAX_HOOK_LENGTH or not url.lower().startswith(("http://", "https://")):
        raise InputError(
            f"The notify hook must be an http(s) URL of at most {MAX_HOOK_LENGTH} characters.",
            field="hook_url",
        )
    # Every delivery runs the full SSRF guard again (after DNS); refusing here what the URL
    # itself shows can never be delivered (localhost, 10.x, 169.254.169.254 …) tells the
    # client now instead of accepting a hook that silently never fires.
    try:
        check_url(url, resolve_host=False)
    except UnsafeURL as exc:
        raise InputError(
            f"The notify hook is not allowed: {exc.message}", field="hook_url"
        ) from exc
    return url


def check_state(state: Any) -> str | None:
    if state is None:
        return None
    text = state if isinstance(state, str) else str(state)
    if len(text) > MAX_STATE_LENGTH:
        raise InputError(f"{FIELD} may be at most {MAX_STATE_LENGTH} characters.", field="state")
    return text


def load_image(
    value: Any, *, field: str, index: int | None = None, action: str | None = None
) -> DecodedImage:
    """A data URL, bare base64, or an http(s) URL fetched through the SSRF guard.

    ``field``/``index`` name the input in errors (``images[2]``, ``mask``).
    """
    if isinstance(value, str) and is_url(value.strip()):
        try:
            data = safe_download(
                value.strip(),
                max_bytes=MAX_DOWNLOAD_BYTES,
                timeout=Timeout(connect=5, read=DOWNLOAD_TIMEOUT, total=DOWNLOAD_TIMEOUT),
            )
        except UnsafeURL as exc:
            raise InputError(f"{FIELD}: {exc}", field=field, index=index, action=action) from exc
        except ResponseTooLarge as exc:
            raise InputError(
                f"{FIELD}: the image is larger than {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MiB.",
                field=field,
                index=index,
                action=action,
            ) from exc
        except OutboundHTTPError as exc:
            raise InputError(
                f"{FIELD}: the image could not be downloaded ({exc}).",
                field=field,
                index=index,
                action=action,
            ) from exc
        value = base64.b64encode(data).decode()
    try:
        # The decoder names the field in its messages; it is given the placeholder, so the
        # dialect can put its own name there.
        return decode_image(value, field=FIELD)
    except ValidationFailed as exc:
        details = {k: v for k, v in exc.details.items() if k != "field"}
        raise InputError(
            exc.message, field=field, index=index, action=action, details=details, code=exc.code
        ) from exc


def store_inputs(images: Sequence[DecodedImage]) -> list[str]:
    return [storage.store_input(data=image.data, ext=image.format.lower()) for image in images]


def discard_files(names: Sequence[str]) -> None:
    for name in names:
        default_storage.delete(name)
