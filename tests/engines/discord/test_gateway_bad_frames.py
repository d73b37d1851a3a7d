"""Odd gateway frames never take an account offline.

A frame that carries nothing the session needs (not an object, no usable op or sequence number,
a dispatch whose payload is not an object, an unknown op) is logged and skipped on the same
connection. One the session cannot go on after (not JSON at all: cut short or corrupted on the
way, it may have been a dispatch) closes the connection with 4000 and resumes at once, so
Discord replays what came after the last good sequence number. A flood of either reconnects
with back-off instead of spinning. Before, a frame that was not an object (or a READY without
its object) ended the connection's task, leaving the account offline until the next lease
round, and an unreadable one closed the socket with 1000, which ends the Discord session: the
resume was refused and the event lost.

The lease round is 30 s away in these tests, so only the connection itself can bring the
account back within the few seconds they wait.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from apps.engines.discord import wire
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.gateway import Connection
from apps.engines.discord.models import DiscordJob

from .conftest import GatewayThread, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

#: A lease round far off: an account back online within seconds was brought back by its
#: connection, not by the next round.
FAR_ROUNDS: dict[str, Any] = {"ttl": 90.0, "renew_every": 30.0}


def _connected(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> tuple[Any, str, Connection]:
    account, token = make_account()
    thread = gateway(account_ids={account.pk}, **FAR_ROUNDS)
    thread.wait_connected(account.pk)
    return account, token, thread.service.connections[account.pk]


def _sent_job(account: Any) -> DiscordJob:
    """An interaction sent and not yet acknowledged: Discord's INTERACTION_SUCCESS for its
    nonce, once the gateway handles it, records the interaction id on the row."""
    return DiscordJob.objects.create(
        nonce=str(uuid.uuid4().int)[:19],
        account=account,
        task_id=uuid.uuid4().hex,
        action="IMAGINE",
        command="imagine",
        bot_id=wire.BOT_IDS["MID_JOURNEY"],
        channel_id=account.options["channel_id"],
        prompt="a quiet harbour --fast",
        phase="sent",
    )


def _acknowledged(row: DiscordJob, interaction_id: str) -> bool:
    row.refresh_from_db()
    return row.interaction_id == interaction_id


def _ack(row: DiscordJob, interaction_id: str) -> dict[str, Any]:
    return {"t": "INTERACTION_SUCCESS", "d": {"id": interaction_id, "nonce": row.nonce}}


def _session_seq(fake: FakeDiscordThread, session_id: str) -> int:
    return fake.discord.world.sessions[session_id].seq


def test_a_corrupted_frame_resumes_the_session_at_once_and_its_event_is_replayed(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token, connection = _connected(make_account, gateway)
    session = connection.session_id
    row = _sent_job(account)
    connections = fake_discord.stats()["gateway_connections"]
    started = time.monotonic()

    # The acknowledgement reaches the socket cut short (invalid JSON); Discord keeps it whole.
    fake_discord.control("frames", {"token": token, "garble": 1, "dispatches": [_ack(row, "71")]})

    wait_for(lambda: _acknowledged(row, "71"), timeout=5)
    assert time.monotonic() - started < 5  # not the next lease round (30 s)
    wait_for(lambda: connection.connected.is_set() and connection.resumes == 1, timeout=5)
    stats = fake_discord.stats()
    assert stats["garbled_frames"] >= 1
    assert stats["gateway_connections"] == connections + 1
    # Resumed, not identified again: closed with 4000, the session stayed Discord's.
    assert stats["identifies"][token] == 1
    assert connection.session_id == session
    assert stats["live_sessions"][token] == session
    wait_for(lambda: connection.sequence == _session_seq(fake_discord, session), timeout=5)


def test_frames_that_carry_nothing_are_skipped_on_the_same_connection(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token, connection = _connected(make_account, gateway)
    session = connection.session_id
    row = _sent_job(account)
    connections = fake_discord.stats()["gateway_connections"]
    raw = [
        "[]",
        '"hello"',
        "42",
        "null",
        '{"op": 99, "d": "\\u0000\\u00ff garbage", "s": "x"}',
        '{"op": "zero", "d": {}}',
        '{"op": 0, "t": "MESSAGE_CREATE", "s": [7], "d": {}}',
        '{"op": 42, "d": [1, 2, 3]}',
    ]
    # Twelve in all: fewer than a connection may skip before it is taken for broken (20).
    dispatches = [
        {"t": "MESSAGE_CREATE", "d": "garbage"},
        {"t": "MESSAGE_UPDATE", "d": [1, 2]},
        {"t": "READY", "d": "not a session"},
        {"t": "INTERACTION_SUCCESS", "d": None},
    ]
    fake_discord.control("frames", {"token": token, "raw": raw, "dispatches": dispatches})
    fake_discord.control("frames", {"token": token, "dispatches": [_ack(row, "72")]})

    # The good dispatch after them was handled, on the same connection and session.
    wait_for(lambda: _acknowledged(row, "72"), timeout=5)
    assert connection.connected.is_set()
    assert connection.resumes == 0
    assert connection.session_id == session
    stats = fake_discord.stats()
    assert stats["gateway_connections"] == connections
    assert stats["identifies"][token] == 1
    # The odd dispatches were counted: the heartbeat sends the session's own sequence number.
    assert connection.sequence == _session_seq(fake_discord, session)


def test_a_flood_of_skipped_frames_reconnects_once_and_resumes(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token, connection = _connected(make_account, gateway)
    session = connection.session_id
    row = _sent_job(account)
    connections = fake_discord.stats()["gateway_connections"]

    fake_discord.control("frames", {"token": token, "raw": ["[]"] * 500})

    wait_for(lambda: connection.resumes == 1 and connection.connected.is_set(), timeout=5)
    fake_discord.control("frames", {"token": token, "dispatches": [_ack(row, "73")]})
    wait_for(lambda: _acknowledged(row, "73"), timeout=5)
    time.sleep(1.0)  # the rest of the flood went to the closed socket: nothing more happens
    stats = fake_discord.stats()
    assert stats["gateway_connections"] == connections + 1
    assert stats["identifies"][token] == 1
    assert connection.session_id == session and connection.resumes == 1


def test_a_flood_of_corrupted_frames_backs_off_then_resumes(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """Every dispatch cut short (RESUMED too): each connection breaks on its first one, and the
    reconnects slow down (0.5 s, 1 s, 2 s, … with jitter) instead of spinning. Once the frames
    arrive whole the session resumes, never identified again."""
    account, token, connection = _connected(make_account, gateway)
    session = connection.session_id
    row = _sent_job(account)
    connections = fake_discord.stats()["gateway_connections"]

    fake_discord.control(
        "frames", {"token": token, "garble": 1000, "dispatches": [_ack(row, "74")]}
    )
    time.sleep(4.0)
    reconnects = fake_discord.stats()["gateway_connections"] - connections
    # Back-off 0.5-0.75 s, then 1-1.5 s, then 2-3 s: at most four within 4 s (a spin: hundreds).
    assert 2 <= reconnects <= 4, reconnects

    fake_discord.control("frames", {"token": token, "garble": 0})
    wait_for(lambda: _acknowledged(row, "74") and connection.connected.is_set(), timeout=20)
    stats = fake_discord.stats()
    assert stats["identifies"][token] == 1
    assert connection.session_id == session
    assert stats["live_sessions"][token] == session


def test_a_session_closed_with_1000_cannot_be_resumed_on_the_fake(
    fake_discord: FakeDiscordThread,
) -> None:
    """The fake ends a session its client closed with 1000, as Discord does (so the tests
    above tell a resumable close from one that ends the session); another code keeps it."""
    import asyncio

    import aiohttp

    token = f"mfa.{uuid.uuid4().hex}"
    fake_discord.add_user(token, guild_id="600000000000000001", channel_ids=["700000000000009999"])
    url = f"{fake_discord.url.replace('http', 'ws', 1)}/gateway"

    async def identify(ws: aiohttp.ClientWebSocketResponse) -> str:
        await ws.receive_json()  # HELLO
        await ws.send_json({"op": 2, "d": {"token": token, "properties": {}}})
        ready = await ws.receive_json()
        return str(ready["d"]["session_id"])

    async def resume(http: aiohttp.ClientSession, session_id: str) -> dict[str, Any]:
        async with http.ws_connect(url) as ws:
            await ws.receive_json()  # HELLO
            await ws.send_json({"op": 6, "d": {"token": token, "session_id": session_id, "seq": 1}})
            while True:
                answer = await ws.receive_json(timeout=5)
                if answer["op"] != 11:
                    await ws.close(code=4000)
                    return dict(answer)

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                kept = await identify(ws)
                await ws.close(code=4000)
            async with http.ws_connect(url) as ws:
                ended = await identify(ws)
                await ws.close(code=1000)
            await asyncio.sleep(0.2)
            return await resume(http, kept), await resume(http, ended)

    # On a thread of its own: in a full run Playwright's sync API keeps an event loop running
    # on the main thread, where asyncio.run() refuses to start another.
    with ThreadPoolExecutor(max_workers=1) as pool:
        kept, ended = pool.submit(asyncio.run, run()).result(timeout=60)
    assert (kept["op"], kept["t"]) == (0, "RESUMED")
    assert (ended["op"], ended["d"]) == (9, False), json.dumps(ended)
