"""Discord's REST API as a user client: interactions, attachment uploads, the command index,
messages, reactions, DMs — with 429s obeyed per route and globally.

Rate limits are shared by every worker through the cache: a 429 records "this account may not
call this route (or anything, when global) before T", and every request first waits that out.
A 429 means Discord did not process the request, so repeating it cannot duplicate anything.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core.cache import cache
from django.utils import timezone

from apps.core.http import Timeout
from apps.engines.base import PermanentEngineError, SubmitOutcomeUnknown, TemporaryEngineError
from apps.engines.services import upstream_account_pause
from apps.tasks.enums import ErrorCode

from .options import DiscordSettings
from .wire import BOT_IDS

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

#: A rate limit longer than this is not waited out inside a request: the task goes back.
MAX_RATE_LIMIT_WAIT = 15.0
#: The longest rate limit believed: an answer asking for more (a proxy gone wrong, an infinite
#: or absurd ``retry_after``) rests the account this long.
MAX_RETRY_AFTER = 24 * 3600.0
MAX_ATTEMPTS = 5
#: A call's turn lock lives this long at most (longer than a rate-limit wait plus a request).
TURN_SECONDS = 45
#: How long a call waits for its turn before the task goes back to the queue.
TURN_WAIT = 30.0
COMMAND_INDEX_SECONDS = 3600
#: Seconds: the whole call, and connecting (an ``httpx.Timeout``).
TIMEOUT = 20.0
CONNECT_TIMEOUT = 5.0
_ID = re.compile(r"/\d{5,}")


class InvalidToken(TemporaryEngineError):
    """Discord rejected the account's token (401): the account must be disabled."""


class CommandOutdated(Exception):
    """The cached command id/version is stale (Discord answered 50035 for it)."""


@dataclass(frozen=True)
class Command:
    id: str
    version: str
    name: str
    application_id: str


def new_nonce() -> str:
    """A nonce shaped like a snowflake (Discord clients send those)."""
    return str((int(time.time() * 1000) - 1_420_070_400_000) << 22 | uuid.uuid4().int & 0x3FFFFF)


class DiscordRest:
    def __init__(
        self, *, account_id: int, settings: DiscordSettings, client: httpx.Client | None = None
    ) -> None:
        # httpx is imported where a client is first made, not with the engine's modules,
        # which every worker process imports at start-up: it is about 3.5 MiB of each
        # process, needed only by one working a discord account (issue 15, P6).
        import httpx

        self.account_id = account_id
        self.settings = settings
        if client is None and settings.guarded:
            client = _guarded_client()
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(TIMEOUT, connect=CONNECT_TIMEOUT)
        )
        self._headers = {
            "Authorization": settings.token,
            "User-Agent": settings.user_agent,
            "Origin": "https://discord.com",
        }

    def close(self) -> None:
        self._client.close()

    # --- rate limits --------------------------------------------------------------------------

    def _key(self, route: str) -> str:
        bucket = hashlib.sha1(route.encode(), usedforsecurity=False).hexdigest()[:16]
        return f"discord:ratelimit:{self.account_id}:{bucket}"

    def _wait_for_limits(self, route: str) -> None:
        now = time.time()
        until = max(float(cache.get(self._key(route)) or 0), float(cache.get(self._key("*")) or 0))
        wait = until - now
        if wait <= 0:
            return
        if wait > MAX_RATE_LIMIT_WAIT:
            # Too long to wait inside a request: the account takes no work until then (the
            # dispatcher gives it to others), and this task goes back to the queue.
            message = f"Discord rate-limits this account for another {wait:.0f} s."
            upstream_account_pause(
                account_id=self.account_id,
                until=timezone.now() + timedelta(seconds=wait),
                reason=message,
            )
            raise TemporaryEngineError(message, error_code=ErrorCode.UPSTREAM_ERROR)
        time.sleep(wait)

    def _limited(self, route: str, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {}
        headers = response.headers
        # The body's float is the precise one; Retry-After is whole seconds, rounded up.
        retry_after = _seconds(
            body.get("retry_after") if isinstance(body, dict) else None,
            headers.get("X-RateLimit-Reset-After"),
            headers.get("Retry-After"),
        )
        is_global = (isinstance(body, dict) and bool(body.get("global"))) or (
            headers.get("X-RateLimit-Global", "").lower() == "true"
        )
        self._hold(route="*" if is_global else route, seconds=retry_after)
        logger.info(
            "discord 429 for account %s on %s: retry after %.2f s%s",
            self.account_id,
            route,
            retry_after,
            " (global)" if is_global else "",
        )

    def _hold(self, *, route: str, seconds: float) -> None:
        """Nobody calls ``route`` (``*``: anything) for this account for ``seconds``."""
        key = self._key(route)
        until = time.time() + seconds
        if until > float(cache.get(key) or 0):
            cache.set(key, until, timeout=int(seconds) + 2)

    def _exhausted(self, route: str, response: httpx.Response) -> None:
        """A bucket with nothing left (``X-RateLimit-Remaining: 0``): wait for its reset
        before calling the route again, instead of running into the 429."""
        if response.headers.get("X-RateLimit-Remaining") != "0":
            return
        seconds = _seconds(response.headers.get("X-RateLimit-Reset-After"))
        if seconds > 0:
            self._hold(route=route, seconds=min(seconds, MAX_RATE_LIMIT_WAIT))

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One REST call of this account at a time, across workers (a lock in the cache).

        A 429 only reaches the other callers once its answer is in: calls already on their way
        would break the limit it announces. Taking turns, every call starts after the previous
        one's answer (and its rate-limit headers) was recorded — as a browser's one client
        would. The lock outlives no call: it expires after ``TURN_SECONDS`` should its holder
        die, and a caller waiting longer than ``TURN_WAIT`` gives up (the task is requeued).
        """
        key = f"discord:turn:{self.account_id}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + TURN_WAIT
        while not cache.add(key, token, timeout=TURN_SECONDS):
            if time.monotonic() >= deadline:
                raise TemporaryEngineError(
                    "This Discord account is busy with other calls; trying again shortly.",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                )
            time.sleep(0.01)
        try:
            yield
        finally:
            if cache.get(key) == token:
                cache.delete(key)

    # --- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        route: str = "",
        absolute: bool = False,
        before_send: Callable[[], None] | None = None,
        once_only: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, waiting out 429s. Connection refused → not sent (temporary);
        a timeout after sending → outcome unknown. ``before_send`` runs right before each try
        leaves (after the turn and any rate limit were waited for). ``once_only``: a request
        that must not run twice (an interaction), for which a 5xx is an unknown outcome too."""
        import httpx  # loaded by __init__ already

        from .guard import RefusedAddress  # lazy: with httpx, loaded by __init__ already

        target = url if absolute else f"{self.settings.rest_base_url}{url}"
        route = route or f"{method} {_ID.sub('/:id', url)}"
        for _attempt in range(MAX_ATTEMPTS):
            with self._turn():
                self._wait_for_limits(route)
                if before_send is not None:
                    before_send()
                try:
                    response = self._client.request(method, target, headers=self._headers, **kwargs)
                except RefusedAddress as exc:
                    # An own account's address that the SSRF guard refuses (it resolves to a
                    # private or loopback address): nothing was sent, and nothing will be
                    # until the account's options are fixed.
                    raise TemporaryEngineError(
                        f"The discord account's address is not allowed: {exc}",
                        error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
                    ) from exc
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    raise TemporaryEngineError(
                        f"Discord cannot be reached ({type(exc).__name__}).",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    ) from exc
                except httpx.HTTPError as exc:
                    raise SubmitOutcomeUnknown(
                        f"Discord did not answer ({type(exc).__name__}).",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    ) from exc
                if response.status_code == 429:
                    self._limited(route, response)
                    continue
                self._exhausted(route, response)
            if response.status_code == 401:
                raise InvalidToken(
                    "Discord rejected the account's token (401 Unauthorized).",
                    error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
                )
            if response.status_code >= 500:
                if once_only:
                    # Any 5xx may come after Discord took the request: a 500 is its API
                    # failing part-way, a 504 its edge giving up on an API still at work, and
                    # 502/503 ("upstream connect error or disconnect/reset before headers")
                    # are also what its edge answers when the API reset the connection after
                    # the request reached it. None certifies that the interaction was not
                    # dispatched to the bot, so the outcome is unknown: the job's row stays
                    # and the look-up (Discord's acknowledgement on the gateway, the channel
                    # read back) tells whether it runs, instead of a second send.
                    raise SubmitOutcomeUnknown(
                        f"Discord answered {response.status_code} to the interaction; whether "
                        "it was dispatched is looked up before anything is sent again.",
                        error_code=ErrorCode.UPSTREAM_ERROR,
                    )
                raise TemporaryEngineError(
                    f"Discord answered {response.status_code}.", error_code=ErrorCode.UPSTREAM_ERROR
                )
            return response
        raise TemporaryEngineError(
            "Discord kept rate-limiting this account.", error_code=ErrorCode.UPSTREAM_ERROR
        )

    # --- the command index --------------------------------------------------------------------

    def _index_key(self) -> str:
        return f"discord:commands:{self.account_id}:{self.settings.guild_id}"

    def command(self, name: str, *, bot: str, refresh: bool = False) -> Command:
        """A slash command's id and version, from the guild's command index (cached)."""
        index: dict[str, dict[str, str]] | None = None if refresh else cache.get(self._index_key())
        if index is None:
            response = self.request(
                "GET", f"/guilds/{self.settings.guild_id}/application-command-index"
            )
            if response.status_code != 200:
                raise TemporaryEngineError(
                    f"Discord's command index answered {response.status_code}.",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                )
            index = {
                f"{item['application_id']}:{item['name']}": {
                    "id": str(item["id"]),
                    "version": str(item["version"]),
                }
                for item in response.json().get("application_commands", [])
            }
            cache.set(self._index_key(), index, timeout=COMMAND_INDEX_SECONDS)
        application_id = BOT_IDS[bot]
        found = index.get(f"{application_id}:{name}")
        if found is None:
            raise PermanentEngineError(
                f"The {bot} bot offers no /{name} command in this server.",
                error_code=ErrorCode.UPSTREAM_REJECTED,
            )
        return Command(found["id"], found["version"], name, application_id)

    # --- interactions -------------------------------------------------------------------------

    def interact(
        self, payload: dict[str, Any], *, before_send: Callable[[], None] | None = None
    ) -> None:
        """POST one interaction. Raises CommandOutdated for a stale command version."""
        response = self.request(
            "POST",
            "/interactions",
            json=payload,
            route="POST /interactions",
            before_send=before_send,
            once_only=True,
        )
        if response.status_code in (200, 204):
            return
        body = _json(response)
        if response.status_code == 400 and "outdated" in str(body.get("errors", "")).lower():
            raise CommandOutdated()
        if response.status_code == 403:
            raise TemporaryEngineError(
                f"Discord refused the interaction: {body.get('message', 'Missing Access')}.",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            )
        raise PermanentEngineError(
            f"Discord rejected the interaction ({response.status_code}: "
            f"{body.get('message', '')}).",
            error_code=ErrorCode.UPSTREAM_REJECTED,
        )

    # --- uploads and messages -----------------------------------------------------------------

    def upload(self, channel_id: str, filename: str, data: bytes) -> str:
        """Discord's two-step upload: ask for a slot, PUT the bytes there. Returns the
        ``uploaded_filename`` that interactions and messages refer to."""
        import httpx  # loaded by __init__ already

        from .guard import RefusedAddress  # lazy: with httpx, loaded by __init__ already

        response = self.request(
            "POST",
            f"/channels/{channel_id}/attachments",
            json={"files": [{"id": "0", "filename": filename, "file_size": len(data)}]},
        )
        if response.status_code != 200:
            raise TemporaryEngineError(
                f"Discord refused an upload slot ({response.status_code}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        slot = response.json()["attachments"][0]
        # The upload URL is a storage bucket, not the API: no token, no API rate limits. It
        # is the answer's word, so only Discord's bucket (or the API's own origin) is used;
        # an own account's PUT goes through the SSRF guard like its other requests.
        upload_url = str(slot["upload_url"])
        parts = urlsplit(upload_url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin not in self.settings.upload_origins:
            raise PermanentEngineError(
                f"Discord named an upload address outside its upload storage ({origin}); "
                "nothing was uploaded.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        try:
            put = self._client.put(
                upload_url,
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        except RefusedAddress as exc:
            raise PermanentEngineError(
                f"Discord's upload address is not allowed ({exc}); nothing was uploaded.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc
        except httpx.HTTPError as exc:
            raise TemporaryEngineError(
                f"Uploading to Discord failed ({type(exc).__name__}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc
        if put.status_code not in (200, 201, 204):
            raise TemporaryEngineError(
                f"Uploading to Discord failed ({put.status_code}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return str(slot["upload_filename"])

    def post_message(
        self, channel_id: str, *, content: str, attachments: list[dict[str, str]]
    ) -> dict[str, Any]:
        response = self.request(
            "POST",
            f"/channels/{channel_id}/messages",
            json={"content": content, "nonce": new_nonce(), "attachments": attachments},
        )
        if response.status_code != 200:
            raise TemporaryEngineError(
                f"Discord refused a message ({response.status_code}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return dict(response.json())

    def messages(self, channel_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        response = self.request("GET", f"/channels/{channel_id}/messages", params={"limit": limit})
        if response.status_code != 200:
            raise TemporaryEngineError(
                f"Discord's message list answered {response.status_code}.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return list(response.json())

    def message(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        """One message of the channel, or None when Discord does not give it.

        Read from the channel's history ``around`` it, as Discord's own client does: the
        single-message route (``GET /channels/:id/messages/:id``) is for bots only, and
        answers a user account's token 403 (code 20002)."""
        response = self.request(
            "GET",
            f"/channels/{channel_id}/messages",
            params={"around": message_id, "limit": 1},
        )
        if response.status_code != 200:
            return None
        try:
            listed = response.json()
        except ValueError:
            return None
        if not isinstance(listed, list):
            return None
        return next(
            (m for m in listed if isinstance(m, dict) and str(m.get("id")) == message_id), None
        )

    def react(self, channel_id: str, message_id: str, emoji: str) -> None:
        response = self.request(
            "PUT",
            f"/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            route="PUT reaction",
        )
        if response.status_code not in (200, 204):
            raise TemporaryEngineError(
                f"Discord refused the reaction ({response.status_code}).",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )

    def open_dm(self, user_id: str) -> str:
        response = self.request("POST", "/users/@me/channels", json={"recipient_id": user_id})
        return str(response.json()["id"])

    def me(self) -> dict[str, Any]:
        response = self.request("GET", "/users/@me")
        return dict(response.json())


def _guarded_client() -> httpx.Client:
    """A client whose every request goes through the SSRF guard (an own account's)."""
    import httpx  # lazy: loaded by DiscordRest.__init__ already (see there)

    from .guard import GuardedTransport  # lazy: httpx with it, for own accounts only

    return httpx.Client(
        transport=GuardedTransport(
            timeout=Timeout(connect=CONNECT_TIMEOUT, read=TIMEOUT, total=TIMEOUT + CONNECT_TIMEOUT)
        ),
        follow_redirects=False,
        trust_env=False,
    )


def _seconds(*candidates: Any) -> float:
    """The first of ``candidates`` that reads as a positive number of seconds (else 1), at
    most ``MAX_RETRY_AFTER``."""
    for value in candidates:
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isnan(seconds) or seconds <= 0:
            continue
        return min(seconds, MAX_RETRY_AFTER)
    return 1.0


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
