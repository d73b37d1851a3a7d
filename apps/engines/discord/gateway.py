"""The gateway service: one Discord WebSocket per leased account, bot events → job updates.

:class:`Connection` speaks the gateway protocol as a user client: HELLO → IDENTIFY (or RESUME
with the last session id and sequence number) → dispatches; it heartbeats on the interval
HELLO gave, treats a missing heartbeat ACK as a dead ("zombie") connection, follows RECONNECT
(op 7) and INVALID_SESSION (op 9: resume if resumable, identify afresh otherwise), and
reconnects with back-off after any drop. An odd frame never takes the account offline: one that
can be skipped safely is logged and skipped, one the session cannot go on after (unreadable, a
HELLO or READY without what the session needs, a flood of skipped ones) closes the connection
with 4000 and opens it again at once, resuming the session (see ``BrokenFrame``). A close code
that means the token is bad stops the account and records why — unless the owner has stored
another token meanwhile: then the closed session was the old token's, and the connection
identifies afresh with the new one.

:class:`GatewayService` holds leases (see ``leases``) and runs a connection for each account
it holds, so several processes on several machines share the accounts without ever
connecting one twice. Each lease round also reads the accounts' settings again: a held account
that was switched off, removed or misconfigured is disconnected and its lease given back, and a
changed token, user agent or gateway address is connected again with the fresh values (see
``_round``). Events of one account are handled in order on a worker thread (the ORM is
synchronous); the resulting ``JobUpdate`` values go to the injected ``sink``.

Handing an account over: a gateway that stops (a deploy, SIGTERM) or loses a lease closes its
socket with 4000 (``RESUMABLE``), which leaves the Discord session alive, and the lease keeps
the session id and the sequence number of the last event handled (``Connection.handover``):
the next holder resumes there and Discord replays what it sent in between. The old holder has
closed before the next one can hold the lease (it lets go before the lease can have lapsed,
and a stopping one releases the lease only after its sockets closed), so no two gateways ever
use one session. Only a session nothing should resume is ended with 1000 (``ENDS_SESSION``):
an account switched off, removed or misconfigured (the lease then forgets the session), and
the old token's session when the token changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar, cast

import aiohttp
from django.db import close_old_connections

from apps.engines.base import JobUpdate
from apps.engines.models import UpstreamAccount

from . import leases, tracker, wire
from .options import DiscordSettings, parse

logger = logging.getLogger(__name__)

Sink = Callable[[JobUpdate], None]
T = TypeVar("T")
#: Gateway capabilities and client properties of the Discord web client (a user session).
CAPABILITIES = 16381
HELLO_TIMEOUT = 15.0
MAX_BACKOFF = 10.0
#: Frames skipped as unreadable that one connection may send within ``BAD_FRAME_WINDOW``
#: seconds; one more and it is taken for broken (``BrokenFrame``).
BAD_FRAME_LIMIT = 20
BAD_FRAME_WINDOW = 10.0
#: How much of a skipped frame the log shows.
LOGGED_FRAME_CHARS = 200
#: Close codes of our own: 4000 leaves the Discord session resumable (by this connection or
#: the next holder of the account's lease); 1000 (a normal close) ends it, as 1001 would.
RESUMABLE = 4000
ENDS_SESSION = 1000


class FatalGatewayError(Exception):
    """Discord closed the connection for a reason retrying cannot fix (bad token …)."""


class BrokenFrame(Exception):
    """A frame the session cannot go on after: one that is not JSON at all (cut short or
    corrupted on its way, it may have been a dispatch: resuming from the last good sequence
    number has Discord send it again), a HELLO or READY without what the session needs, or more
    skipped frames than ``BAD_FRAME_LIMIT``. The connection is closed with 4000, which leaves
    the session resumable, and opened again with the usual back-off (a flood of such frames
    therefore reconnects ever more slowly instead of spinning)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class AccountPlan:
    account_id: int
    name: str
    settings: DiscordSettings
    holder: str = ""
    session_id: str = ""
    sequence: int | None = None
    user_id: str = ""


class Connection:
    """One account's gateway session, reconnecting and resuming until stopped."""

    def __init__(
        self,
        plan: AccountPlan,
        *,
        http: aiohttp.ClientSession,
        handle: Callable[[Callable[[], Any]], Awaitable[Any]],
        sink: Sink,
    ) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.http = http
        self._run_sync = handle
        self.sink = sink
        self.session_id = plan.session_id
        self.sequence: int | None = plan.sequence
        self.user_id = plan.user_id
        self.resume_url = ""
        self.connected = asyncio.Event()
        self._stopping = False
        self._stop_code = ENDS_SESSION
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        #: Dispatches in arrival order, for ``_consume``: the session and sequence number of
        #: each, and the event to handle (None: nothing to handle, its number only counts).
        self._events: asyncio.Queue[_Dispatch] = asyncio.Queue()
        #: The session and sequence number of the last dispatch ``_consume`` dealt with, and
        #: the number the current session started at (its READY): ``handover``.
        self._handled: tuple[str, int | None] = (plan.session_id, plan.sequence)
        self._session_start: int | None = plan.sequence
        self._acked = True
        #: When this connection's recently skipped frames came (``_skip``).
        self._skipped: deque[float] = deque()
        self.identifies = 0
        self.resumes = 0

    @property
    def listener(self) -> tracker.Listener:
        channels = {self.settings.channel_id, self.settings.niji_channel_id} - {""}
        return tracker.Listener(
            account_id=self.plan.account_id, user_id=self.user_id, channels=frozenset(channels)
        )

    def use(self, settings: DiscordSettings) -> None:
        """Take fresh settings. The event handlers read them per event, so the channels, CDN
        and bots change without a reconnect; the next connection attempt uses the rest."""
        self.settings = self.plan.settings = settings

    def handover(self) -> tuple[str, int | None, str]:
        """What the next connection of the account resumes from: the session id, the sequence
        number of the last event handled — not the last received: events still queued when
        this connection stops are then replayed to the successor instead of lost — and the
        user id. No session id once the session is gone (invalidated, a new token)."""
        if not self.session_id:
            return "", None, self.user_id
        session_id, sequence = self._handled
        if session_id != self.session_id:
            # The current session's READY is still queued behind the old session's events.
            sequence = self._session_start
        return self.session_id, sequence, self.user_id

    async def stop(self, *, code: int) -> None:
        """Close for good: ``ENDS_SESSION`` (1000) ends the Discord session; ``RESUMABLE``
        (4000) leaves it to the connection that takes over (``handover``)."""
        self._stopping = True
        self._stop_code = code
        if self._ws is not None and not self._ws.closed:
            await self._ws.close(code=code)

    async def run(self) -> None:
        consumer = asyncio.ensure_future(self._consume())
        backoff = 0.5
        try:
            while not self._stopping:
                started = time.monotonic()
                try:
                    await self._connect_once()
                except FatalGatewayError as exc:
                    if await self._token_replaced():
                        continue  # after ``finally`` below: at once, with the new token
                    logger.error("discord account %s: %s", self.plan.account_id, exc)
                    await self._run_sync(
                        functools.partial(
                            tracker.account_trouble,
                            account_id=self.plan.account_id,
                            health="needs_verification",
                            reason=f"{exc} The account was disabled: enter a fresh token.",
                            disable=True,
                        )
                    )
                    return
                except BrokenFrame as exc:
                    logger.warning(
                        "discord account %s gateway: %s; reconnecting", self.plan.account_id, exc
                    )
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    logger.warning("discord account %s gateway: %r", self.plan.account_id, exc)
                except Exception:
                    # Something nobody foresaw (a payload of a shape Discord never sent before)
                    # must not leave the account offline until the next lease round.
                    logger.exception("discord account %s gateway failed", self.plan.account_id)
                finally:
                    self.connected.clear()
                if self._stopping:
                    break
                if time.monotonic() - started > 30:
                    backoff = 0.5
                await asyncio.sleep(backoff * (1 + random.random() / 2))
                backoff = min(MAX_BACKOFF, backoff * 2)
        finally:
            consumer.cancel()

    async def _token_replaced(self) -> bool:
        """Discord refused our token (4004): has the owner stored another one since this
        connection read it? Then the session Discord closed was the old token's (a browser
        logged out after the new token was entered): take the fresh settings and identify
        afresh with them, instead of switching off an account whose stored token is good."""
        stored = await self._run_sync(
            functools.partial(_stored_settings, account_id=self.plan.account_id)
        )
        if stored is None or stored.token == self.settings.token:
            return False
        logger.info(
            "discord account %s: old token refused, using the new one", self.plan.account_id
        )
        self.use(stored)
        self.session_id, self.sequence, self.user_id, self.resume_url = "", None, "", ""
        return True

    async def _connect_once(self) -> None:
        resuming = bool(self.session_id)
        # An own account's connection goes to Discord's gateway only (``gateway_for``).
        url = self.settings.gateway_for(self.resume_url if resuming else "")
        async with self.http.ws_connect(
            url, headers={"User-Agent": self.settings.user_agent}, max_msg_size=32 * 1024**2
        ) as ws:
            self._ws = ws
            self._skipped.clear()
            try:
                await self._converse(ws, resuming=resuming)
            finally:
                self._ws = None
                if not ws.closed:
                    # Only ``stop`` may end the Discord session (1000). Leaving the ``async
                    # with`` would close with 1000 — also after a close from another task
                    # (``stop``, the heartbeat), which hands the reader CLOSING before its own
                    # code goes out — so a broken or dropped connection closes here with 4000,
                    # which the next one resumes.
                    await ws.close(code=self._stop_code if self._stopping else RESUMABLE)
            if ws.close_code in wire.FATAL_CLOSE_CODES:
                raise FatalGatewayError(
                    f"Discord closed the gateway with code {ws.close_code} (authentication failed)."
                )

    async def _converse(self, ws: aiohttp.ClientWebSocketResponse, *, resuming: bool) -> None:
        first = await ws.receive(timeout=HELLO_TIMEOUT)
        if first.type in _CLOSED:
            return  # closed before HELLO: the close code says why
        if first.type != aiohttp.WSMsgType.TEXT:
            raise BrokenFrame(f"expected HELLO, got a {first.type.name} frame")
        interval = _heartbeat_interval(self._decode(first.data))
        self._acked = True
        beat = asyncio.ensure_future(self._heartbeat(ws, interval))
        try:
            if resuming:
                self.resumes += 1
                await ws.send_json(
                    {
                        "op": wire.OP_RESUME,
                        "d": {
                            "token": self.settings.token,
                            "session_id": self.session_id,
                            "seq": self.sequence,
                        },
                    }
                )
            else:
                await self._identify(ws)
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    payload = self._decode(frame.data)
                    if payload is not None:
                        await self._on_payload(ws, payload)
                elif frame.type in _CLOSED:
                    # ERROR: aiohttp closed already (a frame that is not UTF-8 with 1007, which
                    # leaves the session resumable); the caller reconnects.
                    break
                else:
                    # We ask for neither compression nor ETF: Discord sends text frames only.
                    self._skip(f"a {frame.type.name} frame", frame.data)
        finally:
            beat.cancel()

    def _decode(self, text: str) -> dict[str, Any] | None:
        """A text frame as a gateway payload; None for one skipped (``_skip``): valid JSON
        but no payload (not an object, no whole-number op or sequence number), which carries
        nothing the session needs and which Discord would only send again on a resume."""
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise BrokenFrame(f"a frame that is not JSON ({exc})") from exc
        if not isinstance(payload, dict):
            self._skip("a frame that is not an object", text)
            return None
        sequence = payload.get("s")
        if not _is_int(payload.get("op")) or not (sequence is None or _is_int(sequence)):
            self._skip("a frame without a whole-number op and sequence number", text)
            return None
        return payload

    def _skip(self, what: str, frame: object) -> None:
        """Log a frame skipped as unreadable. More than ``BAD_FRAME_LIMIT`` of them within
        ``BAD_FRAME_WINDOW`` seconds and the connection is taken for broken (``BrokenFrame``):
        the log stays bounded, and a new connection is tried, with back-off."""
        now = time.monotonic()
        self._skipped.append(now)
        while self._skipped[0] < now - BAD_FRAME_WINDOW:
            self._skipped.popleft()
        if len(self._skipped) > BAD_FRAME_LIMIT:
            raise BrokenFrame(
                f"{len(self._skipped)} unreadable frames within {BAD_FRAME_WINDOW:g} s"
            )
        logger.warning(
            "discord account %s: skipped %s: %.*s",
            self.plan.account_id,
            what,
            LOGGED_FRAME_CHARS,
            repr(frame),
        )

    async def _identify(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.identifies += 1
        await ws.send_json(
            {
                "op": wire.OP_IDENTIFY,
                "d": {
                    "token": self.settings.token,
                    "capabilities": CAPABILITIES,
                    "properties": {
                        "os": "Windows",
                        "browser": "Chrome",
                        "device": "",
                        "system_locale": "en-US",
                        "browser_user_agent": self.settings.user_agent,
                        "release_channel": "stable",
                    },
                    "presence": {"status": "online", "since": 0, "activities": [], "afk": False},
                    "compress": False,
                    "client_state": {"guild_versions": {}},
                },
            }
        )

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse, interval: float) -> None:
        await asyncio.sleep(interval * random.random())
        while not ws.closed:
            if not self._acked:
                # No ACK since the last beat: the connection is a zombie. Drop it and resume.
                logger.warning("discord account %s: heartbeat not acked", self.plan.account_id)
                await ws.close(code=4000)
                return
            self._acked = False
            await ws.send_json({"op": wire.OP_HEARTBEAT, "d": self.sequence})
            await asyncio.sleep(interval)

    async def _on_payload(
        self, ws: aiohttp.ClientWebSocketResponse, payload: dict[str, Any]
    ) -> None:
        op, sequence = payload["op"], payload.get("s")
        if op == wire.OP_DISPATCH and payload.get("t") == "READY":
            await self._ready(payload)
            return
        if sequence is not None:
            self.sequence = max(self.sequence or 0, sequence)
        if op == wire.OP_DISPATCH:
            event, data = payload.get("t"), payload.get("d")
            if not isinstance(event, str) or not isinstance(data, dict):
                # Discord's own odd payload: a resume would only send it again. Its sequence
                # number is counted and the event skipped; a job it was news of is read back
                # by the engine's poll once the gateway has been silent about it.
                self._skip("a dispatch whose event is not a name with an object", payload)
                event, data = "", None
            elif event == "RESUMED":
                self.connected.set()
                data = None
            await self._events.put(_Dispatch(self.session_id, sequence, event, data))
        elif op == wire.OP_HEARTBEAT:
            await ws.send_json({"op": wire.OP_HEARTBEAT, "d": self.sequence})
        elif op == wire.OP_HEARTBEAT_ACK:
            self._acked = True
        elif op == wire.OP_RECONNECT:
            await ws.close(code=4000)
        elif op == wire.OP_INVALID_SESSION:
            if not payload.get("d"):
                self.session_id = ""
                self.sequence = None
                self.resume_url = ""
            await asyncio.sleep(random.uniform(0.2, 1.0))
            await ws.close(code=4000)
        else:
            logger.debug("discord account %s: op %s ignored", self.plan.account_id, op)

    async def _ready(self, payload: dict[str, Any]) -> None:
        """READY: the session our IDENTIFY opened. One without a session id leaves nothing to
        go on with (``BrokenFrame``: identify again); a stray one on a live session is skipped."""
        data = payload.get("d")
        session_id = data.get("session_id") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(session_id, str) or not session_id:
            if self.connected.is_set():
                if payload.get("s") is not None:
                    self.sequence = max(self.sequence or 0, payload["s"])
                self._skip("a READY without a session", payload)
                return
            raise BrokenFrame("a READY without a session id")
        user = data.get("user")
        resume_url = data.get("resume_gateway_url")
        # A new session counts from its own first dispatch.
        self.sequence = self._session_start = payload.get("s") or 0
        self.session_id = session_id
        self.resume_url = resume_url if isinstance(resume_url, str) else ""
        self.user_id = str(user.get("id", "")) if isinstance(user, dict) else ""
        await self._record_session()
        await self._events.put(_Dispatch(session_id, self.sequence, "READY", None))
        self.connected.set()

    async def _record_session(self) -> None:
        """Write the new session down at once: workers send interactions with its id, and a
        successor process resumes it."""
        try:
            await self._run_sync(
                functools.partial(
                    leases.lease_record_session,
                    account_id=self.plan.account_id,
                    holder=self.plan.holder,
                    session_id=self.session_id,
                    sequence=self.sequence,
                    user_id=self.user_id,
                )
            )
        except Exception:
            logger.exception("discord account %s: session not recorded", self.plan.account_id)

    async def _consume(self) -> None:
        """Handle this account's events one after another, in the order they arrived, and
        count each as handled once it was (``handover``); one whose handling was cancelled
        (the connection stopping) is not, so the next holder has it replayed."""
        while True:
            dispatch = await self._events.get()
            try:
                if dispatch.data is not None:
                    await self._run_sync(
                        functools.partial(self._handle_and_push, dispatch.event, dispatch.data)
                    )
            except Exception:
                logger.exception(
                    "discord account %s: %s not handled", self.plan.account_id, dispatch.event
                )
            finally:
                self._events.task_done()
            if dispatch.sequence is not None:
                self._handled = (dispatch.session_id, dispatch.sequence)

    def _handle_and_push(self, event: str, data: dict[str, Any]) -> None:
        close_old_connections()
        for update in self._handle(event, data):
            self.sink(update)

    def _handle(self, event: str, data: dict[str, Any]) -> list[JobUpdate]:
        listener = self.listener
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return tracker.message_seen(
                listener=listener,
                message=data,
                edited=event == "MESSAGE_UPDATE",
                settings=self.settings,
            )
        if event == "INTERACTION_SUCCESS":
            tracker.interaction_acknowledged(listener=listener, data=data)
        elif event == "INTERACTION_FAILURE":
            tracker.interaction_failed(listener=listener, data=data)
        elif event == "INTERACTION_MODAL_CREATE":
            tracker.modal_opened(listener=listener, data=data, iframe=False)
        elif event == "INTERACTION_IFRAME_MODAL_CREATE":
            tracker.modal_opened(listener=listener, data=data, iframe=True)
        return []


@dataclass(frozen=True)
class _Dispatch:
    """A dispatch in ``Connection._events``: its session and sequence number, and the event to
    handle (its payload None for one that only counts: READY, RESUMED, a skipped one)."""

    session_id: str
    sequence: int | None
    event: str
    data: dict[str, Any] | None


#: What ``receive`` gives once the socket is gone.
_CLOSED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


def _heartbeat_interval(hello: dict[str, Any] | None) -> float:
    """HELLO's heartbeat interval in seconds; ``BrokenFrame`` when the first frame is none."""
    data = hello.get("d") if hello is not None else None
    interval = data.get("heartbeat_interval") if isinstance(data, dict) else None
    if hello is None or hello.get("op") != wire.OP_HELLO:
        raise BrokenFrame(f"expected HELLO, got {hello!r:.{LOGGED_FRAME_CHARS}}")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        raise BrokenFrame(f"a HELLO without a heartbeat interval: {hello!r:.{LOGGED_FRAME_CHARS}}")
    return float(interval) / 1000


def _plans(account_ids: set[int] | None) -> list[AccountPlan]:
    close_old_connections()
    accounts = UpstreamAccount.objects.filter(engine="discord", is_enabled=True).order_by("pk")
    if account_ids is not None:
        accounts = accounts.filter(pk__in=account_ids)
    plans = []
    for account in accounts:
        try:
            settings = parse(account.options or {}, cast(dict[str, Any], account.secrets or {}))
        except ValueError as exc:
            logger.error("discord account %s is misconfigured: %s", account.pk, exc)
            continue
        # An organization's own account: its downloads go through the SSRF guard, and its
        # connection to Discord's gateway only.
        settings = replace(settings, guarded=account.owner_id is not None)
        plans.append(AccountPlan(account_id=account.pk, name=account.name, settings=settings))
    return plans


def _stored_settings(*, account_id: int) -> DiscordSettings | None:
    """The account's settings as stored now; None when it is switched off, gone or unusable."""
    plans = _plans({account_id})
    return plans[0].settings if plans else None


def connects_alike(held: DiscordSettings, fresh: DiscordSettings) -> bool:
    """Whether a connection opened with ``held`` is still the one ``fresh`` asks for: the same
    token, the same browser (IDENTIFY's user agent, the socket's header) and the same gateway
    address. The other settings are read per event (``Connection.use``)."""
    return (held.token, held.user_agent, held.gateway_for()) == (
        fresh.token,
        fresh.user_agent,
        fresh.gateway_for(),
    )


class GatewayService:
    """Leases accounts and keeps a :class:`Connection` running for each one held."""

    def __init__(
        self,
        *,
        holder: str,
        sink: Sink,
        ttl: float = leases.TTL.total_seconds(),
        renew_every: float = leases.RENEW_EVERY.total_seconds(),
        account_ids: set[int] | None = None,
        threads: int = 4,
    ) -> None:
        if renew_every * 2 >= ttl:
            raise ValueError("Leases must be renewed at least twice per lifetime.")
        self.holder = holder
        self.sink = sink
        self.ttl = ttl
        self.renew_every = renew_every
        self.account_ids = account_ids
        self.connections: dict[int, Connection] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Until when each held lease is certainly ours (by our clock).
        self._valid_until: dict[int, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="discord-gw")
        # The leases' statements on a thread of their own: event handling (result downloads,
        # the lifecycle's updates) busy on every thread of the pool above must not hold the
        # renewal back until the lease lapses and another process takes the account.
        self._lease_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discord-lease")
        self._stop = asyncio.Event()

    async def _sync(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def _lease_sync(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._lease_executor, function)

    async def _watch(self) -> None:
        """Let go of a lease not renewed in time, whatever the lease round is waiting for (a
        slow database): it may be someone else's by now (``_expire``)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(1.0, self.renew_every / 4))
            await self._expire()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            watch = asyncio.ensure_future(self._watch())
            try:
                while not self._stop.is_set():
                    try:
                        await self._round(http)
                    except Exception:
                        # The database may be away: keep the connections while their leases
                        # are certainly ours, and try again next round.
                        logger.exception("discord gateway %s: lease round failed", self.holder)
                    await self._expire()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.renew_every)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch
                # What this process holds, read before ``_drop`` forgets it: released at once,
                # so the next holder need not wait for the leases to run out. The sessions are
                # left resumable and written down for it (``handover``), once every socket is
                # closed — all at once: none waits for another's close while its lease runs.
                held = sorted({*self._valid_until, *self.connections})
                stopped = await asyncio.gather(
                    *(
                        self._drop(account_id, code=RESUMABLE)
                        for account_id in list(self.connections)
                    ),
                    return_exceptions=True,
                )
                sessions = {
                    conn.plan.account_id: conn.handover()
                    for conn in stopped
                    if isinstance(conn, Connection)
                }
                await self._lease_sync(
                    functools.partial(
                        leases.lease_release,
                        holder=self.holder,
                        account_ids=held,
                        sessions=sessions,
                    )
                )
                self._executor.shutdown(wait=False)
                self._lease_executor.shutdown(wait=False)

    async def _round(self, http: aiohttp.ClientSession) -> None:
        ttl = timedelta(seconds=self.ttl)
        sessions = {account_id: conn.handover() for account_id, conn in self.connections.items()}
        started = time.monotonic()
        kept = await self._lease_sync(
            lambda: leases.lease_renew(holder=self.holder, sessions=sessions, ttl=ttl)
        )
        for account_id in list(self.connections):
            if account_id in kept:
                self._valid_until[account_id] = started + self.ttl
            else:
                # Someone else's now: the session is theirs to resume (its state is in the
                # lease as of our last renewal; Discord replays from there).
                logger.warning("lost the lease of discord account %s", account_id)
                await self._drop(account_id, code=RESUMABLE)
        ended = [account_id for account_id, task in self._tasks.items() if task.done()]
        for account_id in ended:
            await self._drop(account_id, code=ENDS_SESSION)  # fatal: the account was disabled
        planned = await self._lease_sync(lambda: _plans(self.account_ids))
        plans = {plan.account_id: plan for plan in planned}
        # A held account no longer planned — switched off (by an operator, or by a tenant on
        # its own account), removed, or its stored settings unusable — is disconnected now and
        # its lease given back: the session must not stay open with that token. Its tasks still
        # running lose nothing: the lifecycle polls them on whatever the account's state, and
        # the engine's poll reads the channel back over REST once the gateway has been silent
        # about a live job for ``engine.RECOVER_AFTER_SECONDS`` (and answers a form the bot
        # opened, presses a video's clips), so they end as they would have, only later. Keeping
        # the session for them would keep a switched-off account connected for as long as its
        # jobs run, and could not tell a forgotten row from a running job. Nothing should resume
        # the session either: it is ended (1000) and the lease forgets it.
        gone = sorted({*ended, *self.connections} - plans.keys())
        for account_id in gone:
            if account_id in self.connections:
                logger.info("discord account %s is no longer served: disconnected", account_id)
                await self._drop(account_id, code=ENDS_SESSION)
        if gone:
            await self._lease_sync(
                functools.partial(
                    leases.lease_release,
                    holder=self.holder,
                    account_ids=gone,
                    forget_sessions=True,
                )
            )
        for plan in plans.values():
            held = self.connections.get(plan.account_id)
            if held is not None:
                await self._refresh(held, plan, http)
                continue
            lease = await self._lease_sync(
                functools.partial(
                    leases.lease_acquire, account_id=plan.account_id, holder=self.holder, ttl=ttl
                )
            )
            if lease is None:
                continue
            plan.session_id, plan.sequence, plan.user_id = (
                lease.session_id,
                lease.sequence,
                lease.user_id,
            )
            self._start(plan, http, valid_until=started + self.ttl)
            logger.info(
                "discord account %s (%s) leased by %s", plan.account_id, plan.name, self.holder
            )

    def _start(self, plan: AccountPlan, http: aiohttp.ClientSession, *, valid_until: float) -> None:
        plan.holder = self.holder
        self._valid_until[plan.account_id] = valid_until
        connection = Connection(plan, http=http, handle=self._sync, sink=self.sink)
        self.connections[plan.account_id] = connection
        self._tasks[plan.account_id] = asyncio.ensure_future(connection.run())

    async def _refresh(
        self, held: Connection, plan: AccountPlan, http: aiohttp.ClientSession
    ) -> None:
        """A held account's stored settings, read again this round. Ones that connect alike
        are taken as they are; a new token, user agent or gateway address needs a new
        connection (the lease stays ours): with the same token it resumes the session, so
        nothing Discord sent meanwhile is missed; with another token the old session is ended
        (1000) and the new one identifies afresh — a session belongs to the token that opened
        it, and the old one may soon be logged out (Discord then closes its session with 4004,
        which would have switched the account off although the stored token is good)."""
        if connects_alike(held.settings, plan.settings):
            held.use(plan.settings)
            return
        valid_until = self._valid_until.get(plan.account_id)
        if valid_until is None:
            return  # let go meanwhile (``_expire``): the next round leases it again
        same_token = held.settings.token == plan.settings.token
        logger.info("discord account %s: settings changed, connecting again", plan.account_id)
        await self._drop(plan.account_id, code=RESUMABLE if same_token else ENDS_SESSION)
        if same_token:
            # Read once the old connection stopped handling events: what it had not handled
            # is replayed to the new one.
            plan.session_id, plan.sequence, plan.user_id = held.handover()
        self._start(plan, http, valid_until=valid_until)

    async def _expire(self) -> None:
        """A lease we could not renew in time may already be someone else's: let go first,
        leaving the session to whoever takes the lease (its state is in the lease as of our
        last renewal)."""
        now = time.monotonic()
        for account_id, until in list(self._valid_until.items()):
            if until - self.renew_every / 2 < now and account_id in self.connections:
                logger.warning("discord account %s: lease not renewed in time", account_id)
                await self._drop(account_id, code=RESUMABLE)

    async def _drop(self, account_id: int, *, code: int) -> Connection | None:
        """Stop the account's connection (closed with ``code``) and forget it; returns it, its
        events no longer handled, for its ``handover``."""
        connection = self.connections.pop(account_id, None)
        task = self._tasks.pop(account_id, None)
        self._valid_until.pop(account_id, None)
        if connection is not None:
            await connection.stop(code=code)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return connection
