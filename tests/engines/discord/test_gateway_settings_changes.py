"""The gateway follows an account's stored settings while it holds the account.

An owner replaces the token (the old browser session is about to be logged out), the user
agent or the channels: the lease round reads the settings again and reconnects, resumes or
just takes them, so the session always runs with what is stored. Discord closing the old
token's session (4004) after a new token was stored must not switch the account off.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import GatewayLease
from apps.engines.models import Health, UpstreamAccount
from apps.engines.services import upstream_account_update

from .conftest import GatewayThread, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _store(
    account: UpstreamAccount,
    *,
    options: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> None:
    """Change the account's settings as the owner's edit does."""
    account.refresh_from_db()
    upstream_account_update(
        account=account,
        name=account.name,
        modes=list(account.modes),
        concurrency=account.concurrency,
        queue_size=account.queue_size,
        run_timeout_seconds=account.run_timeout_seconds,
        options={**account.options, **(options or {})},
        secrets=secrets,
    )


def _new_token(fake: FakeDiscordThread, account: UpstreamAccount) -> str:
    """A second Discord login of the same user's channel (the token the owner stores next)."""
    token = f"mfa.{uuid.uuid4().hex}{uuid.uuid4().hex}"
    fake.add_user(token, guild_id="600000000000000001", channel_ids=[account.options["channel_id"]])
    return token


def _serving(account: UpstreamAccount) -> bool:
    account.refresh_from_db()
    return account.is_enabled and account.health == Health.HEALTHY


def test_a_new_token_replaces_the_old_session_at_the_next_round(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """The lease round sees the new token, ends the old token's session and identifies with
    the new one (keeping the lease): the old login being logged out later touches nothing.
    Before, a held account was never read again and ran on the old token until Discord closed
    it with 4004 — and then was switched off as "needs verification"."""
    account, old_token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    new_token = _new_token(fake_discord, account)
    _store(account, secrets={"token": new_token})

    def switched() -> bool:
        live = fake_discord.stats()["live_sessions"]
        return new_token in live and old_token not in live

    wait_for(switched)
    fake_discord.add_user(old_token, revoked=True)
    assert fake_discord.control("drop", {"token": old_token, "how": "auth"})["dropped"] == 0
    thread.wait_connected(account.pk)
    assert thread.service.connections[account.pk].settings.token == new_token
    assert _serving(account), account.health_reason
    assert fake_discord.stats()["identifies"][new_token] == 1


def test_the_old_tokens_session_closed_before_the_round_does_not_switch_the_account_off(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """Discord closes the old token's session (4004) before the next lease round has read the
    new token (rounds 20 s apart here): the connection reads the stored token, finds another
    one and identifies with it at once, instead of disabling an account whose token is good."""
    account, old_token = make_account()
    thread = gateway(account_ids={account.pk}, ttl=60.0, renew_every=20.0)
    thread.wait_connected(account.pk)
    new_token = _new_token(fake_discord, account)
    _store(account, secrets={"token": new_token})
    fake_discord.add_user(old_token, revoked=True)
    assert fake_discord.control("drop", {"token": old_token, "how": "auth"})["dropped"] == 1
    wait_for(lambda: new_token in fake_discord.stats()["live_sessions"])
    assert _serving(account), account.health_reason
    assert thread.service.connections[account.pk].settings.token == new_token


def test_a_token_refused_that_is_still_the_stored_one_switches_the_account_off(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """The stored token itself reset (no new one entered): the account is switched off as
    before, and its lease given back at once (it used to stay held until it ran out)."""
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    fake_discord.add_user(token, revoked=True)
    fake_discord.control("drop", {"token": token, "how": "auth"})
    wait_for(lambda: not UpstreamAccount.objects.get(pk=account.pk).is_enabled)
    account.refresh_from_db()
    assert account.health == Health.NEEDS_VERIFICATION
    wait_for(lambda: account.pk not in thread.service.connections)
    wait_for(lambda: GatewayLease.objects.get(pk=account.pk).holder == "")


def test_a_new_user_agent_reconnects_and_resumes_the_session(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """The browser the token is tied to changed: the connection is opened again as that
    browser and resumes its session (nothing Discord sent meanwhile is missed)."""
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    first = thread.service.connections[account.pk]
    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
    _store(account, options={"user_agent": agent})

    def resumed() -> bool:
        connection = thread.service.connections.get(account.pk)
        return (
            connection is not None
            and connection is not first
            and connection.connected.is_set()
            and connection.resumes == 1
        )

    wait_for(resumed)
    connection = thread.service.connections[account.pk]
    assert connection.settings.user_agent == agent
    assert connection.session_id == first.session_id
    assert fake_discord.stats()["identifies"][token] == 1
    assert fake_discord.stats()[f"max_connections:{token}"] == 1


def test_other_settings_are_taken_without_reconnecting(
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    """A Niji channel added (or the fallback to relax switched): read by the event handlers of
    the same connection, which neither reconnects nor identifies again."""
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    connection = thread.service.connections[account.pk]
    _store(account, options={"niji_channel_id": "700000999999999999", "bots": ["NIJI_JOURNEY"]})
    wait_for(lambda: connection.settings.niji_channel_id == "700000999999999999")
    assert "700000999999999999" in connection.listener.channels
    assert thread.service.connections[account.pk] is connection
    assert connection.resumes == 0
    assert fake_discord.stats()["identifies"][token] == 1
