"""The REST client against the fake: 429s per route and global, the command index cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache

from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.options import parse
from apps.engines.discord.rest import DiscordRest

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def rest_for(
    make_account: Callable[..., Any],
) -> Callable[..., tuple[DiscordRest, str, str]]:
    def make(**fake_user: Any) -> tuple[DiscordRest, str, str]:
        account, token = make_account(fake_user=fake_user)
        settings = parse(account.options, account.secrets)
        return DiscordRest(account_id=account.pk, settings=settings), token, settings.channel_id

    cache.clear()
    return make


@pytest.mark.parametrize("is_global", [False, True], ids=["per-route", "global"])
def test_429_is_waited_out_for_retry_after(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread, is_global: bool
) -> None:
    rest, _token, channel = rest_for(rate_limit=2, retry_after=0.3, rate_limit_global=is_global)
    violations = fake_discord.stats().get("rate_limit_violations", 0)
    started = time.monotonic()
    assert rest.messages(channel) == []
    assert time.monotonic() - started >= 0.55  # two waits of retry_after
    assert fake_discord.stats().get("rate_limit_violations", 0) == violations


def test_a_global_limit_holds_back_other_routes_too(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    rest, _token, channel = rest_for(rate_limit=1, retry_after=0.5, rate_limit_global=True)
    violations = fake_discord.stats().get("rate_limit_violations", 0)
    first = threading.Thread(target=rest.messages, args=(channel,))
    first.start()
    time.sleep(0.15)  # the first call has had its global 429 by now
    started = time.monotonic()
    rest.me()  # another route: waits the global limit out instead of breaking it
    assert time.monotonic() - started >= 0.2
    first.join(5)
    assert fake_discord.stats().get("rate_limit_violations", 0) == violations
    assert fake_discord.stats()["rate_limited"] >= 1


def test_the_command_index_is_read_once_and_again_when_outdated(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    rest, _token, _channel = rest_for()
    before = fake_discord.stats().get("command_index", 0)
    imagine = rest.command("imagine", bot="MID_JOURNEY")
    assert rest.command("imagine", bot="MID_JOURNEY") == imagine
    niji = rest.command("imagine", bot="NIJI_JOURNEY")
    assert niji.application_id == "1022952195194359889" and niji.id != imagine.id
    assert fake_discord.stats()["command_index"] == before + 1
    fake_discord.control("commands/bump")
    fresh = rest.command("imagine", bot="MID_JOURNEY", refresh=True)
    assert fresh.id == imagine.id and fresh.version != imagine.version


def test_upload_flow_puts_the_bytes_where_discord_said(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    rest, _token, channel = rest_for()
    uploaded = rest.upload(channel, "x.png", b"\x89PNG fake bytes")
    message = rest.post_message(
        channel,
        content="",
        attachments=[{"id": "0", "filename": "x.png", "uploaded_filename": uploaded}],
    )
    url = message["attachments"][0]["url"]
    assert url.startswith(f"{fake_discord.url}/attachments/{channel}/")
    assert rest.messages(channel)[0]["id"] == message["id"]
