"""The REST client against the fake: 429s per route and global, the command index cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.engines.base import TemporaryEngineError
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.options import parse
from apps.engines.discord.rest import DiscordRest
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import upstream_account_usable
from tests.factories import UserFactory

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


@pytest.mark.parametrize("is_global", [False, True], ids=["per-route", "global"])
def test_the_fake_answers_429_as_discord_does(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread, is_global: bool
) -> None:
    _rest, token, channel = rest_for(rate_limit=1, retry_after=1.25, rate_limit_global=is_global)
    response = httpx.get(
        f"{fake_discord.url}/api/v10/channels/{channel}/messages", headers={"Authorization": token}
    )
    assert response.status_code == 429
    body = response.json()
    assert body["message"] == "You are being rate limited."
    assert (body["retry_after"], body["global"]) == (1.25, is_global)
    headers = response.headers
    assert headers["Retry-After"] == "2"  # whole seconds, rounded up
    if is_global:
        assert (headers["X-RateLimit-Global"], headers["X-RateLimit-Scope"]) == ("true", "global")
        assert "X-RateLimit-Bucket" not in headers
    else:
        assert headers["X-RateLimit-Scope"] == "user"
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("5", "0")
        assert float(headers["X-RateLimit-Reset-After"]) == 1.25
        assert float(headers["X-RateLimit-Reset"]) > time.time()
        assert headers["X-RateLimit-Bucket"]
        assert "X-RateLimit-Global" not in headers


def test_a_long_rate_limit_pauses_the_account_instead_of_waiting(
    rest_for: Callable[..., Any], fake_discord: FakeDiscordThread, mailoutbox: list[Any]
) -> None:
    UserFactory(is_staff=True)
    rest, _token, channel = rest_for(rate_limit=1, retry_after=40, rate_limit_global=True)
    violations = fake_discord.stats().get("rate_limit_violations", 0)
    with pytest.raises(TemporaryEngineError) as caught:
        rest.messages(channel)
    assert "rate-limits this account" in caught.value.message
    account = UpstreamAccount.objects.get(pk=rest.account_id)
    assert account.health == Health.COOLING_DOWN
    assert account.cooldown_until is not None
    assert timezone.now() + timedelta(seconds=30) < account.cooldown_until
    assert account.cooldown_until < timezone.now() + timedelta(seconds=41)
    assert not upstream_account_usable(account, now=timezone.now())
    # Nothing was sent while limited, and a routine rate limit mails nobody.
    assert fake_discord.stats().get("rate_limit_violations", 0) == violations
    assert mailoutbox == []


def test_an_empty_bucket_is_waited_for_before_the_429() -> None:
    """``X-RateLimit-Remaining: 0`` on a success: the route is held until the bucket resets."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[],
            headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "7.5"},
        )

    cache.clear()
    settings = parse(
        {"guild_id": "600000000000000001", "channel_id": "700000000000000001"},
        {"token": "mfa.bucket-test-token-0123456789"},
    )
    rest = DiscordRest(
        account_id=987654,
        settings=settings,
        client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    assert rest.messages("700000000000000001") == []
    held = float(cache.get(rest._key("GET /channels/:id/messages")) or 0)
    assert time.time() + 6 < held <= time.time() + 7.5
    assert cache.get(rest._key("*")) is None  # only that route


@pytest.mark.parametrize("retry_after", [b"1e999", b"1e12", b"NaN"], ids=["inf", "huge", "nan"])
def test_an_absurd_retry_after_pauses_the_account_for_a_day_at_most(
    make_account: Callable[..., Any], retry_after: bytes
) -> None:
    """A 429 whose ``retry_after`` is infinite, absurdly long or not a number (a proxy gone
    wrong): the account rests at most ``MAX_RETRY_AFTER`` and the task is requeued; neither
    the request nor any later one of the account crashes on a date past the year 9999."""
    from apps.engines.discord.rest import MAX_RETRY_AFTER

    account, _token = make_account()

    def answer(request: httpx.Request) -> httpx.Response:
        body = b'{"message": "You are being rate limited.", "retry_after": ' + retry_after
        return httpx.Response(429, content=body + b', "global": true}')

    cache.clear()
    settings = parse(account.options, account.secrets)
    rest = DiscordRest(
        account_id=account.pk,
        settings=settings,
        client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    for _ in range(2):  # the 429 itself, then a call while the hold stands
        with pytest.raises(TemporaryEngineError):
            rest.messages(settings.channel_id)
    account.refresh_from_db()
    if retry_after == b"NaN":  # not a number: the 1 s default, waited out within the call
        return
    assert account.health == Health.COOLING_DOWN
    assert account.cooldown_until <= timezone.now() + timedelta(seconds=MAX_RETRY_AFTER)
