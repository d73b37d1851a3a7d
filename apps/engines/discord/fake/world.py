"""The fake Discord's memory: users, gateway sessions, channels and messages, counters.

Everything lives in one process and one event loop, so no locking is needed. Counters are what
tests assert on: interactions per nonce (``duplicate_nonces`` must stay 0), identifies per token
(``identify once``), requests made while a rate limit was still running.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Discord's epoch (2015-01-01) in milliseconds; snowflakes count from it.
DISCORD_EPOCH_MS = 1_420_070_400_000
MIDJOURNEY_BOT_ID = "936929561302675456"
NIJI_BOT_ID = "1022952195194359889"
BOT_NAMES = {MIDJOURNEY_BOT_ID: "Midjourney Bot", NIJI_BOT_ID: "niji・journey Bot"}
#: Events a resumed session can still replay.
SESSION_BUFFER = 5000


@dataclass
class FakeUser:
    """A Discord user account with a Midjourney subscription, and the trouble it is in."""

    token: str
    id: str
    username: str
    guild_id: str
    channel_ids: set[str]
    mode: str = "fast"
    fast_exhausted: bool = False
    captcha: bool = False
    banned: bool = False
    subscribed: bool = True
    #: The bot does not answer: Discord reports INTERACTION_FAILURE after its timeout.
    bot_offline: bool = False
    #: Remix mode: variation, reroll and pan buttons ask for the prompt in a modal first.
    remix: bool = False
    #: Jobs the bot runs for this user at once before it answers "Job queue full".
    queue_limit: int = 12
    #: The next N REST calls of this user answer 429.
    rate_limit: int = 0
    rate_limit_global: bool = False
    retry_after: float = 0.2
    #: The next N interactions are answered with ``interaction_error`` (a 5xx) after
    #: Discord dispatched them to the bot (its API failing, or its edge giving up, once the
    #: interaction went on): the job runs, though the answer says otherwise.
    interaction_errors: int = 0
    interaction_error: int = 500
    #: The token was reset (password change, Discord's own invalidation): REST answers 401,
    #: the gateway closes with 4004.
    revoked: bool = False
    running: int = 0
    dm_channel_id: str = ""

    def as_public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "discriminator": "0"}


@dataclass
class Session:
    id: str
    user: FakeUser
    seq: int = 0
    buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SESSION_BUFFER))
    ws: web.WebSocketResponse | None = None
    invalid: bool = False
    #: The next N dispatches reach the socket cut short (a frame corrupted on its way); the
    #: backlog keeps them whole, so a resume replays them.
    garble: int = 0


@dataclass
class BotJob:
    """What the bot remembers about one of its result messages (for its buttons)."""

    hash: str
    prompt: str
    user_id: str
    bot_id: str
    channel_id: str
    seed: int
    grid: bool
    kind: str
    mode: str
    custom_ids: tuple[str, ...]
    #: The message's picture (an upscale: what its Animate buttons start from).
    image: bytes = b""
    #: A video message's clips (MP4), in batch order.
    clips: tuple[bytes, ...] = ()


class World:
    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.users: dict[str, FakeUser] = {}
        self.sessions: dict[str, Session] = {}
        self.channels: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self.uploads: dict[str, bytes] = {}
        self.cdn: dict[str, bytes] = {}
        self.bot_jobs: dict[str, BotJob] = {}
        #: Modal interactions the bot opened: id → (custom_id, what to do with the answer).
        self.modals: dict[str, dict[str, Any]] = {}
        self.stats: Counter[str] = Counter()
        self.identifies: Counter[str] = Counter()
        self.nonces: Counter[str] = Counter()
        #: (user id, route) → monotonic time before which a request breaks the rate limit.
        self.limited_until: dict[tuple[str, str], float] = {}
        self.command_versions: dict[str, str] = {}
        #: Open gateway sockets per user token (two at once would be one account connected twice).
        self.live_sockets: dict[str, set[web.WebSocketResponse]] = {}

    def snowflake(self) -> str:
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((now_ms << 22) | (next(self._counter) & 0x3FFFFF))

    def user_by_token(self, token: str | None) -> FakeUser | None:
        if not token:
            return None
        user = self.users.get(token.removeprefix("Bot ").strip())
        return None if user is None or user.revoked else user

    def user_by_id(self, user_id: str) -> FakeUser | None:
        return next((user for user in self.users.values() if user.id == user_id), None)

    def channel(self, channel_id: str) -> OrderedDict[str, dict[str, Any]]:
        return self.channels.setdefault(channel_id, OrderedDict())

    def watchers(self, channel_id: str) -> list[FakeUser]:
        return [
            user
            for user in self.users.values()
            if channel_id in user.channel_ids or channel_id == user.dm_channel_id
        ]

    def counts(self) -> dict[str, Any]:
        duplicates = sum(count - 1 for count in self.nonces.values() if count > 1)
        return {
            **self.stats,
            "interactions": sum(self.nonces.values()),
            "duplicate_nonces": duplicates,
            "identifies": dict(self.identifies),
            "live_sessions": {
                session.user.token: session.id
                for session in self.sessions.values()
                if session.ws is not None and not session.ws.closed
            },
        }
