"""A discord account's settings: what the operator enters, checked, with defaults filled in.

Options (not secret): ``guild_id`` and ``channel_id`` (the server and channel the bot answers
in), ``niji_channel_id`` (a separate channel for the Niji bot, optional), ``user_agent`` (the
browser's, as Discord saw it), ``bots`` (``MID_JOURNEY`` and/or ``NIJI_JOURNEY``),
``fast_fallback_to_relax`` (run FAST jobs in relax once fast hours ran out, instead of
refusing FAST), ``submit_confirm_seconds`` (how long a submit waits for the bot's first word)
and the base URLs ``rest_base_url``, ``gateway_url``, ``cdn_base_url``, ``inpaint_base_url``
(Discord's by default; tests and demos point them at the fake).

An organization's own account (``guarded``: not the operator's) is customer input: every HTTP
request made for it goes through the SSRF guard (``apps.core.http``: resolved, vetted, pinned,
no redirects), and its gateway connects to Discord's own gateway only (``gateway_for``).

Secret (encrypted at rest, write-only): ``token``, the user token from the browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .wire import BOT_IDS

DEFAULTS: dict[str, Any] = {
    "rest_base_url": "https://discord.com/api/v10",
    "gateway_url": "wss://gateway.discord.gg/?v=10&encoding=json",
    "cdn_base_url": "https://cdn.discordapp.com",
    "inpaint_base_url": "https://936929561302675456.discordsays.com",
    "user_agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    ),
    "bots": ["MID_JOURNEY"],
    "niji_channel_id": "",
    "fast_fallback_to_relax": False,
    "submit_confirm_seconds": 8.0,
}
REQUIRED = ("guild_id", "channel_id")
OPTIONS = (*REQUIRED, *DEFAULTS)
SECRETS = ("token",)
#: Where Discord's answer to an upload-slot request may send the bytes (besides the API's own
#: origin): the storage bucket Discord's web client uploads to.
DISCORD_UPLOAD_ORIGINS = ("https://discord-attachments-uploads-prd.storage.googleapis.com",)
#: The hosts an own account's gateway may connect (and resume) to: Discord's gateway, whose
#: READY names a regional host of the same domain (``wss://gateway-us-east1-b.discord.gg``).
DISCORD_GATEWAY_DOMAIN = "discord.gg"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class DiscordSettings:
    guild_id: str
    channel_id: str
    niji_channel_id: str
    user_agent: str
    bots: tuple[str, ...]
    fast_fallback_to_relax: bool
    submit_confirm_seconds: float
    rest_base_url: str
    gateway_url: str
    cdn_base_url: str
    inpaint_base_url: str
    token: str
    #: An organization's own account: requests go through the SSRF guard (module docstring).
    guarded: bool = False

    def channel_for(self, bot: str) -> str:
        return (
            self.niji_channel_id
            if bot == "NIJI_JOURNEY" and self.niji_channel_id
            else (self.channel_id)
        )

    @property
    def cdn_origins(self) -> tuple[str, ...]:
        """Where result images may be downloaded from (the CDN and its media proxy)."""
        origin = _origin(self.cdn_base_url)
        if origin == "https://cdn.discordapp.com":
            return origin, "https://media.discordapp.net"
        return (origin,)

    @property
    def upload_origins(self) -> tuple[str, ...]:
        """Where an attachment's bytes may be PUT: Discord's upload bucket, or the API's own
        origin (a stand-in for Discord, like the fake, serves both)."""
        return (_origin(self.rest_base_url), *DISCORD_UPLOAD_ORIGINS)

    def gateway_for(self, resume_url: str = "") -> str:
        """The URL the gateway connects to: ``resume_url`` (READY's) when resuming, else the
        configured one. An own account connects to Discord's gateway only: its configured URL
        is ignored for the default, and a resume URL off Discord's domain for the configured."""
        configured = DEFAULTS["gateway_url"] if self.guarded else self.gateway_url
        if not resume_url:
            return str(configured)
        if self.guarded and not is_discord_gateway(resume_url):
            return str(configured)
        return resume_url


def is_discord_gateway(url: str) -> bool:
    """A ``wss`` URL on Discord's gateway domain (no user info, the default port)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "wss"
        and "@" not in parts.netloc
        and port in (None, 443)
        and (host == DISCORD_GATEWAY_DOMAIN or host.endswith(f".{DISCORD_GATEWAY_DOMAIN}"))
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _snowflake(name: str, value: Any, *, required: bool) -> str:
    text = str(value if value is not None else "").strip()
    if not text:
        if required:
            raise ValueError(f"discord needs {name} (right-click it in Discord → Copy ID).")
        return ""
    if not text.isdigit() or not 5 <= len(text) <= 25:
        raise ValueError(f"{name} must be a Discord id (digits only), not '{text}'.")
    return text


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false.")


def _url(name: str, value: Any, schemes: tuple[str, ...]) -> str:
    text = str(value or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"{name} must be a {' or '.join(schemes)} URL, not '{text}'.")
    return text


def falls_back_to_relax(options: Mapping[str, Any]) -> bool:
    """``fast_fallback_to_relax`` of stored options (False when absent or unreadable)."""
    try:
        return _boolean("fast_fallback_to_relax", options.get("fast_fallback_to_relax", False))
    except ValueError:
        return False


def parse(options: Mapping[str, Any], secrets: Mapping[str, Any]) -> DiscordSettings:
    """Checked settings; raises ValueError with a sentence an operator can act on."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown discord option(s) {', '.join(unknown)} (use {', '.join(OPTIONS)})."
        )
    unknown = sorted(set(secrets) - set(SECRETS))
    if unknown:
        raise ValueError(f"Unknown discord secret(s) {', '.join(unknown)} (use token).")
    merged = {**DEFAULTS, **options}
    token = str(secrets.get("token") or "").strip()
    if not token or any(ch.isspace() for ch in token) or len(token) < 20:
        raise ValueError(
            "discord needs token: the user token (the Authorization header of a request the "
            "Discord web app sends), at least 20 characters without spaces."
        )
    bots = merged["bots"]
    if isinstance(bots, str):
        bots = [part.strip() for part in bots.split(",") if part.strip()]
    bots = tuple(str(bot).upper() for bot in bots)
    if not bots or any(bot not in BOT_IDS for bot in bots):
        raise ValueError("bots must list MID_JOURNEY and/or NIJI_JOURNEY.")
    try:
        confirm = float(merged["submit_confirm_seconds"])
    except (TypeError, ValueError) as exc:
        raise ValueError("submit_confirm_seconds must be a number of seconds.") from exc
    if not 0 <= confirm <= 60:
        raise ValueError("submit_confirm_seconds must be between 0 and 60.")
    user_agent = str(merged["user_agent"] or "").strip()
    if not user_agent:
        raise ValueError("user_agent cannot be empty (copy your browser's).")
    return DiscordSettings(
        guild_id=_snowflake("guild_id", merged.get("guild_id"), required=True),
        channel_id=_snowflake("channel_id", merged.get("channel_id"), required=True),
        niji_channel_id=_snowflake("niji_channel_id", merged["niji_channel_id"], required=False),
        user_agent=user_agent,
        bots=bots,
        fast_fallback_to_relax=_boolean("fast_fallback_to_relax", merged["fast_fallback_to_relax"]),
        submit_confirm_seconds=confirm,
        rest_base_url=_url("rest_base_url", merged["rest_base_url"], ("https", "http")),
        gateway_url=_url("gateway_url", merged["gateway_url"], ("wss", "ws")),
        cdn_base_url=_url("cdn_base_url", merged["cdn_base_url"], ("https", "http")),
        inpaint_base_url=_url("inpaint_base_url", merged["inpaint_base_url"], ("https", "http")),
        token=token,
    )
