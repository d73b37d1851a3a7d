"""Handing an account's Discord session over from one gateway to the next.

A gateway that stops cleanly (a deploy, SIGTERM) or loses its lease closes its socket with 4000,
which leaves the session resumable, and leaves the session id and the sequence number of the
last event it handled in the lease: the next holder resumes there, and Discord replays what it
sent in between — the bot's answers to a job running meanwhile are not lost until the REST
read-back finds them. An account switched off ends its session (1000) and the lease forgets it:
nothing should resume it. The fake ends a session closed with 1000 or 1001 and keeps any other
resumable, as Discord does. ``max_connections`` stays 1 throughout: the old holder has closed
before the next one resumes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import GatewayLease
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_set_enabled

from .conftest import GatewayThread, job_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _pushed_success(thread: GatewayThread, nonce: str) -> bool:
    return any(u.upstream_job_id == nonce and u.result.status == "success" for u in thread.updates)


def _result_posted(fake: FakeDiscordThread, token: str, account: UpstreamAccount) -> bool:
    """Whether the bot has posted the job's result (its image with the job's buttons, not a
    progress preview) in the channel, read over the fake's REST API as the account's user."""
    channel = account.options["channel_id"]
    response = httpx.get(
        f"{fake.url}/api/v10/channels/{channel}/messages",
        headers={"Authorization": token},
        timeout=10,
    )
    response.raise_for_status()
    return any(
        message.get("attachments") and message.get("components") for message in response.json()
    )


def _submit_while_nobody_listens(
    engine: DiscordEngine, fake: FakeDiscordThread, token: str, account: UpstreamAccount
) -> str:
    """A job sent while no gateway holds the account: the bot's answers (its nonce reply, the
    progress, the result) are only in the session's backlog. Returns the job's nonce."""
    assert token not in fake.stats()["live_sessions"]
    submitted = engine.submit(job_for(account, prompt="a lighthouse in a gale"))
    wait_for(lambda: _result_posted(fake, token, account))
    return submitted.upstream_job_id


def _assert_resumed_once_and_never_twice(
    fake: FakeDiscordThread,
    token: str,
    successor: GatewayThread,
    account: UpstreamAccount,
    session: str,
) -> None:
    connection = successor.service.connections[account.pk]
    assert connection.session_id == session
    assert (connection.identifies, connection.resumes) == (0, 1)
    stats = fake.stats()
    assert stats["identifies"][token] == 1  # the first gateway's IDENTIFY only
    assert stats.get(f"resume_refused:{token}", 0) == 0
    assert stats.get(f"sessions_closed:{token}", 0) == 0
    # Never connected twice: the old holder had closed before the new one resumed.
    assert stats[f"max_connections:{token}"] == 1


def test_a_stopped_gateways_successor_resumes_and_gets_what_was_sent_in_between(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """A deploy: the gateway stops (as on SIGTERM), a job's answers come while none runs, the
    new gateway resumes the session and gets them. Before, the stop closed with 1000: the
    session was ended, the new gateway identified afresh and the answers were lost."""
    account, token = make_account(submit_confirm_seconds=0)
    first = gateway(holder="gw-old", account_ids={account.pk})
    first.wait_connected(account.pk)
    session = first.service.connections[account.pk].session_id
    first.stop()
    lease = GatewayLease.objects.get(pk=account.pk)
    assert (lease.holder, lease.session_id) == ("", session)
    assert lease.sequence is not None

    nonce = _submit_while_nobody_listens(engine, fake_discord, token, account)

    successor = gateway(holder="gw-new", account_ids={account.pk})
    wait_for(lambda: _pushed_success(successor, nonce), timeout=15)
    _assert_resumed_once_and_never_twice(fake_discord, token, successor, account, session)


def test_events_received_but_not_yet_handled_are_replayed_to_the_successor(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """The stopping gateway had received the job's answers but not handled them yet (its
    event threads busy): the lease records the sequence number of the last event handled, not
    the last received, so the successor has them replayed. Recording the last received would
    skip them for good."""
    account, token = make_account(submit_confirm_seconds=0)
    first = gateway(holder="gw-old", account_ids={account.pk})
    first.wait_connected(account.pk)
    connection = first.service.connections[account.pk]
    session = connection.session_id
    busy = threading.Event()
    for _ in range(4):  # every thread of the event pool
        first.service._executor.submit(busy.wait, 30)
    try:
        received = connection.sequence or 0
        submitted = engine.submit(job_for(account, prompt="a harbour in fog"))
        wait_for(lambda: _result_posted(fake_discord, token, account))
        # Everything the session was sent so far has arrived (and waits in the queue).
        sent = fake_discord.discord.world.sessions[session]
        wait_for(lambda: connection.sequence == sent.seq and sent.seq > received + 2)
        first.stop()
    finally:
        busy.set()
    assert not _pushed_success(first, submitted.upstream_job_id)
    lease = GatewayLease.objects.get(pk=account.pk)
    assert lease.session_id == session
    assert lease.sequence is not None and lease.sequence <= received

    successor = gateway(holder="gw-new", account_ids={account.pk})
    wait_for(lambda: _pushed_success(successor, submitted.upstream_job_id), timeout=15)
    _assert_resumed_once_and_never_twice(fake_discord, token, successor, account, session)


@pytest.mark.parametrize("how", ["renewal-stuck", "taken-over"])
def test_a_lost_lease_is_let_go_resumably_and_the_next_holder_resumes(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
    how: str,
) -> None:
    """The holder loses the lease — its renewal stuck (the database away), so it lets go
    before the lease can have lapsed; or the lease found someone else's at a renewal — and
    closes the session resumably; the next holder resumes it and gets what the bot sent in
    between. Before, the old holder closed with 1000 and the successor had to identify."""
    account, token = make_account(submit_confirm_seconds=0)
    first = gateway(holder="gw-old", account_ids={account.pk})
    first.wait_connected(account.pk)
    session = first.service.connections[account.pk].session_id
    stuck = threading.Event()
    try:
        if how == "renewal-stuck":
            first.service._lease_executor.submit(stuck.wait, 30)  # the renewals wait behind it
        else:
            GatewayLease.objects.filter(pk=account.pk).update(
                holder="gw-new", expires_at=timezone.now() + timedelta(seconds=30)
            )
        wait_for(lambda: account.pk not in first.service.connections, timeout=first.service.ttl)
        wait_for(lambda: token not in fake_discord.stats()["live_sessions"])
        nonce = _submit_while_nobody_listens(engine, fake_discord, token, account)

        successor = gateway(holder="gw-new", account_ids={account.pk})
        wait_for(lambda: _pushed_success(successor, nonce), timeout=15)
        assert GatewayLease.objects.get(pk=account.pk).holder == "gw-new"
        _assert_resumed_once_and_never_twice(fake_discord, token, successor, account, session)
    finally:
        stuck.set()
    assert account.pk not in first.service.connections


def test_a_switched_off_account_ends_its_session_and_the_lease_forgets_it(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """Switched off, the account's session is ended (1000: nothing should resume it) and the
    lease keeps no session to resume; switched on again, the gateway identifies afresh without
    a RESUME Discord would refuse. Before, the lease kept the ended session's id, which workers
    went on sending interactions with and the next connection tried to resume first."""
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    session = thread.service.connections[account.pk].session_id
    user_id = thread.service.connections[account.pk].user_id

    upstream_account_set_enabled(account=account, enabled=False)
    wait_for(lambda: GatewayLease.objects.get(pk=account.pk).holder == "")
    assert token not in fake_discord.stats()["live_sessions"]
    assert fake_discord.stats().get(f"sessions_closed:{token}", 0) == 1  # ended, not resumable
    lease = GatewayLease.objects.get(pk=account.pk)
    assert (lease.session_id, lease.sequence, lease.user_id) == ("", None, user_id)

    upstream_account_set_enabled(account=account, enabled=True)
    thread.wait_connected(account.pk)
    connection = thread.service.connections[account.pk]
    assert connection.session_id not in ("", session)
    assert (connection.identifies, connection.resumes) == (1, 0)
    stats = fake_discord.stats()
    assert stats["identifies"][token] == 2
    assert stats.get(f"resume_refused:{token}", 0) == 0
    assert stats[f"max_connections:{token}"] == 1


def test_a_new_token_ends_the_old_tokens_session(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """A guard for the handover above, which made the gateway's own closes resumable: a new
    token still ends the old token's session (1000), which nothing should resume, and the new
    token's connection identifies afresh."""
    from .test_gateway_settings_changes import _new_token, _store

    account, old_token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    new_token = _new_token(fake_discord, account)
    _store(account, secrets={"token": new_token})
    wait_for(lambda: fake_discord.stats().get(f"sessions_closed:{old_token}", 0) == 1)
    thread.wait_connected(account.pk)
    connection = thread.service.connections[account.pk]
    assert connection.settings.token == new_token
    assert (connection.identifies, connection.resumes) == (1, 0)
    stats = fake_discord.stats()
    assert old_token not in stats["live_sessions"]
    assert stats.get(f"resume_refused:{new_token}", 0) == 0
