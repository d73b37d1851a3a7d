"""An organization's own discord account: every request made for it runs the SSRF guard.

Its addresses are customer input, checked at creation only as text. A public-looking name that
resolves to a private address passed, and the engine's plain httpx client, its result download
and its upload PUT (to whatever ``upload_url`` the answer named) then reached our private
network. Now REST calls, the upload PUT and result downloads of an own account go through
``apps.core.http`` (resolved, vetted, pinned, no redirects), an upload address off Discord's
upload storage is refused, and its gateway connects to Discord's gateway only.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest

from apps.accounts.models import MembershipTier, Organization
from apps.core import http
from apps.core.errors import ValidationFailed
from apps.engines.base import Job, PermanentEngineError, TemporaryEngineError
from apps.engines.discord import gateway, tracker
from apps.engines.discord import options as discord_options
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.fake.render import grid_png
from apps.engines.discord.rest import DiscordRest
from apps.engines.models import UpstreamAccount
from apps.engines.own_services import own_account_create
from apps.tasks.enums import Action
from apps.tasks.jobs import account_view

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

#: The tenant's name for its "Discord": public-looking, resolving into our network.
TENANT_HOST = "discord-api.tenant.example"
CHANNEL = "700000000000000077"


@pytest.fixture
def tenant_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tenant's DNS: its host name resolves to 127.0.0.1 (where the fake Discord is)."""
    real = socket.getaddrinfo

    def resolve(name: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if name == TENANT_HOST else name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.fixture
def premium(organization: Organization) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    return organization


@pytest.fixture
def tenant_token(fake_discord: FakeDiscordThread) -> Iterator[str]:
    token = f"mfa.{uuid.uuid4().hex}{uuid.uuid4().hex}"
    fake_discord.add_user(token, guild_id="600000000000000001", channel_ids=[CHANNEL])
    yield token


def _own_account(
    organization: Organization, fake: FakeDiscordThread, token: str
) -> UpstreamAccount:
    base = fake.url.replace("127.0.0.1", TENANT_HOST)
    return own_account_create(
        organization=organization,
        engine="discord",
        name=f"mine-{uuid.uuid4().hex[:6]}",
        modes=["FAST"],
        options={
            "guild_id": "600000000000000001",
            "channel_id": CHANNEL,
            "rest_base_url": f"{base}/api/v10",
            "cdn_base_url": base,
            "inpaint_base_url": base,
            "submit_confirm_seconds": 0,
        },
        secrets={"token": token},
    )


def _job(account: UpstreamAccount) -> Job:
    return Job(
        task_id=uuid.uuid4().hex,
        action=Action.IMAGINE,
        mode="FAST",
        prompt="a red fox",
        params={},
        account=account_view(account),
    )


def _guarded(account: UpstreamAccount) -> discord_options.DiscordSettings:
    settings = discord_options.parse(account.options, account.secrets)
    return replace(settings, guarded=True)


def test_an_own_accounts_calls_never_reach_a_private_address(
    settings: Any,
    premium: Organization,
    fake_discord: FakeDiscordThread,
    tenant_token: str,
    tenant_dns: None,
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    account = _own_account(premium, fake_discord, tenant_token)
    job = _job(account)
    assert job.account.operator_managed is False
    before = fake_discord.stats()

    with pytest.raises(TemporaryEngineError) as caught:
        DiscordEngine().submit(job)
    assert caught.value.error_code == "ACCOUNT_UNAVAILABLE"
    assert "not allowed" in caught.value.message
    # A result on the tenant's "CDN" is not downloaded either.
    image = f"http://{TENANT_HOST}:{fake_discord.url.rsplit(':', 1)[1]}/attachments/1/2/g.png"
    with pytest.raises(PermanentEngineError) as refused:
        tracker.download(image, _guarded(account))
    assert "not allowed" in refused.value.message

    after = fake_discord.stats()
    for counter in ("command_index", "unauthorized", "cdn_downloads", "uploads"):
        assert after.get(counter, 0) == before.get(counter, 0), counter


def test_an_own_account_works_through_the_guard_where_private_addresses_are_allowed(
    settings: Any,
    premium: Organization,
    fake_discord: FakeDiscordThread,
    tenant_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Development and tests allow private addresses: the guarded client then does all an
    account needs (the command index, the upload PUT, a message, the result download)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    account = _own_account(premium, fake_discord, tenant_token)
    # The fake's own address, as its answers name it (the service refuses it as text).
    UpstreamAccount.objects.filter(pk=account.pk).update(
        options={
            **account.options,
            **{
                key: str(account.options[key]).replace(TENANT_HOST, "127.0.0.1")
                for key in ("rest_base_url", "cdn_base_url", "inpaint_base_url")
            },
        }
    )
    account.refresh_from_db()
    guarded: list[str] = []  # what went through the guard
    session_request = http.SafeSession.request
    single_request = http.safe_request

    def through_session(self: http.SafeSession, method: str, url: str, **kwargs: Any) -> Any:
        guarded.append(f"{method} {urlsplit(url).path}")
        return session_request(self, method, url, **kwargs)

    def through_single(method: str, url: str, **kwargs: Any) -> Any:
        guarded.append(f"{method} {urlsplit(url).path}")
        return single_request(method, url, **kwargs)

    monkeypatch.setattr(http.SafeSession, "request", through_session)
    monkeypatch.setattr(http, "safe_request", through_single)
    settings_ = _guarded(account)
    rest = DiscordRest(account_id=account.pk, settings=settings_)
    try:
        assert rest.command("imagine", bot="MID_JOURNEY").name == "imagine"
        uploaded = rest.upload(CHANNEL, "frame.png", grid_png("guarded"))
        message = rest.post_message(
            CHANNEL,
            content="",
            attachments=[{"id": "0", "filename": "frame.png", "uploaded_filename": uploaded}],
        )
    finally:
        rest.close()
    url = str(message["attachments"][0]["url"])
    assert tracker.download(url, settings_) == grid_png("guarded")
    assert [(call.split()[0], call.rsplit("/", 1)[1]) for call in guarded] == [
        ("GET", "application-command-index"),
        ("POST", "attachments"),
        ("PUT", "frame.png"),
        ("POST", "messages"),
        ("GET", "frame.png"),
    ]


def test_an_upload_address_off_discords_upload_storage_is_refused(
    settings: Any,
    premium: Organization,
    fake_discord: FakeDiscordThread,
    tenant_token: str,
    tenant_dns: None,
) -> None:
    """The answer to an upload-slot request names where the bytes go: only Discord's upload
    bucket or the API's own origin are used (the fake names its own address, 127.0.0.1,
    which is not the origin this account calls its API by)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    account = _own_account(premium, fake_discord, tenant_token)
    uploads = fake_discord.stats().get("uploads", 0)
    rest = DiscordRest(account_id=account.pk, settings=_guarded(account))
    try:
        with pytest.raises(PermanentEngineError) as caught:
            rest.upload(CHANNEL, "frame.png", grid_png("elsewhere"))
    finally:
        rest.close()
    assert "outside its upload storage (http://127.0.0.1:" in caught.value.message
    assert fake_discord.stats().get("uploads", 0) == uploads


def test_an_own_accounts_gateway_connects_to_discord_only(
    premium: Organization,
    fake_discord: FakeDiscordThread,
    tenant_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway's account read drops stale connections: not this test's, in its transaction.
    monkeypatch.setattr(gateway, "close_old_connections", lambda: None)
    with pytest.raises(ValidationFailed) as refused:
        own_account_create(
            organization=premium,
            engine="discord",
            name="with-gateway",
            modes=["FAST"],
            options={
                "guild_id": "600000000000000001",
                "channel_id": CHANNEL,
                "gateway_url": "wss://gateway.tenant.example/",
            },
            secrets={"token": tenant_token},
        )
    assert refused.value.details == {"field": "options.gateway_url"}
    assert "Discord's gateway" in refused.value.message

    own = _own_account(premium, fake_discord, tenant_token)
    # Set behind the service's back (an old row, the admin): still not used.
    UpstreamAccount.objects.filter(pk=own.pk).update(
        options={**own.options, "gateway_url": f"{fake_discord.url.replace('http', 'ws')}/gw"}
    )
    (plan,) = gateway._plans({own.pk})
    official = discord_options.DEFAULTS["gateway_url"]
    assert plan.settings.guarded is True
    assert plan.settings.gateway_for() == official
    assert plan.settings.gateway_for("wss://127.0.0.1:8443/") == official
    assert plan.settings.gateway_for("ws://gateway.evil.example/") == official
    regional = "wss://gateway-us-east1-b.discord.gg"
    assert plan.settings.gateway_for(regional) == regional

    operators = UpstreamAccount.objects.create(
        engine="discord",
        name="operators",
        modes=["FAST"],
        options={**own.options, "gateway_url": "ws://127.0.0.1:9/gateway"},
        secrets={"token": tenant_token},
    )
    (theirs,) = gateway._plans({operators.pk})
    assert theirs.settings.guarded is False
    assert theirs.settings.gateway_for() == "ws://127.0.0.1:9/gateway"
    assert theirs.settings.gateway_for("ws://127.0.0.1:9/resume") == "ws://127.0.0.1:9/resume"
