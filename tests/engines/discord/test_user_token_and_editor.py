"""What Discord answers a user account's token (the engine drives user accounts, not bots):
the single-message route is bot-only, so a result's fresh link is read from the history; and
the vary-region editor's submit-job, which starts a Midjourney job, is never sent twice.

Discord is modelled with an httpx.MockTransport answering as the real API answers a user token.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from apps.engines.base import SubmitOutcomeUnknown, TemporaryEngineError
from apps.engines.discord import engine as engine_module
from apps.engines.discord import options as discord_options
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.discord.rest import DiscordRest
from apps.engines.services import upstream_account_create
from apps.tasks.enums import Action

from .conftest import job_for

pytestmark = [pytest.mark.django_db]

API = "https://discord.test/api/v10"
CDN = "https://cdn.discord.test"
CHANNEL = "700000000000000777"
RESULT_MESSAGE = "1200000000000000001"
FRESH = f"{CDN}/attachments/{CHANNEL}/1/grid_0.png?ex=fresh&is=1&hm=abc"
STALE = f"{CDN}/attachments/{CHANNEL}/1/grid_0.png?ex=old&is=0&hm=def"


def _account() -> Any:
    return upstream_account_create(
        engine="discord",
        name=f"probe-{uuid.uuid4().hex[:8]}",
        modes=["FAST", "RELAX"],
        options={
            "guild_id": "600000000000000001",
            "channel_id": CHANNEL,
            "rest_base_url": API,
            "gateway_url": "wss://gateway.discord.test/gateway",
            "cdn_base_url": CDN,
            "inpaint_base_url": "https://editor.discord.test",
            "token": "mfa.probe-user-token",
        },
    )


class _Discord:
    """Discord's REST API as a user token sees it."""

    def __init__(self, *, editor_status: int = 200) -> None:
        self.editor_posts = 0
        self.editor_status = editor_status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/api/v10/channels/{CHANNEL}/messages/{RESULT_MESSAGE}":
            # Get Channel Message is bot-only: a user token is refused (code 20002). User
            # clients read one message with the history endpoint and ``around``.
            return httpx.Response(
                403, json={"message": "Only bots can use this endpoint", "code": 20002}
            )
        if path == f"/api/v10/channels/{CHANNEL}/messages":
            message = {
                "id": RESULT_MESSAGE,
                "channel_id": CHANNEL,
                "content": "**a fox** - <@1> (fast)",
                "attachments": [{"id": "1", "filename": "grid_0.png", "url": FRESH}],
            }
            return httpx.Response(200, json=[message])
        if path == "/api/v10/users/@me":
            return httpx.Response(200, json={"id": "1"})
        if request.url.host == "editor.discord.test":
            self.editor_posts += 1
            return httpx.Response(self.editor_status, text="upstream connect error")
        return httpx.Response(404, json={"message": "404: Not Found", "code": 0})


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch) -> _Discord:
    world = _Discord()

    class MockedRest(DiscordRest):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("client", httpx.Client(transport=httpx.MockTransport(world)))
            super().__init__(**kwargs)

    monkeypatch.setattr(engine_module, "DiscordRest", MockedRest)
    return world


def test_fresh_link_reread_works_with_a_user_token(discord: _Discord) -> None:
    """An expired CDN link is renewed from the result message, read from the channel's history
    (``around`` it): GET /channels/:id/messages/:id answers user tokens 403 (20002, 'Only bots
    can use this endpoint'), so reading it there never found a fresh link."""
    account = _account()
    job = job_for(account)
    row = DiscordJob.objects.create(
        nonce=str(uuid.uuid4().int)[:19],
        account=account,
        task_id=job.task_id,
        action=Action.IMAGINE,
        command="imagine",
        phase=Phase.SUCCESS,
        bot_id="936929561302675456",
        channel_id=CHANNEL,
        progress=100,
        image_url=STALE,
        is_grid=True,
        result_message_id=RESULT_MESSAGE,
    )
    settings = discord_options.parse(account.options, account.secrets)

    fresh = DiscordEngine()._fresh_image_url(job, row, settings)

    assert fresh is not None, "no fresh link: the single-message endpoint is bot-only"
    assert fresh.image_url == FRESH


def test_vary_region_editor_5xx_is_not_sent_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vary-region editor's submit-job starts a Midjourney job, like an interaction: a 5xx
    is an unknown outcome that leaves the row MODAL_SENT. As a temporary error the row went
    back to MODAL and the next poll submitted the region edit again: two Midjourney jobs."""
    world = _Discord(editor_status=502)
    account = _account()
    job = job_for(account, action="VARIATION", mask=b"\x89PNG mask")
    row = DiscordJob.objects.create(
        nonce=str(uuid.uuid4().int)[:19],
        account=account,
        task_id=job.task_id,
        action=Action.VARIATION,
        command="vary_region",
        phase=Phase.MODAL,
        bot_id="936929561302675456",
        channel_id=CHANNEL,
        modal={"iframe": True, "custom_id": "MJ::iframe::abc", "id": "1"},
    )
    settings = discord_options.parse(account.options, account.secrets)
    engine = DiscordEngine()

    for _poll in range(2):  # two polls of the task, as the lifecycle makes them
        rest = DiscordRest(
            account_id=account.pk,
            settings=settings,
            client=httpx.Client(transport=httpx.MockTransport(world)),
        )
        row.refresh_from_db()
        try:
            if row.phase == Phase.MODAL:
                engine._answer_modal(job, row, settings, rest)
        except (TemporaryEngineError, SubmitOutcomeUnknown):
            pass  # the poll step records either and polls again
        finally:
            rest.close()

    assert world.editor_posts == 1, (
        f"the region edit was submitted {world.editor_posts} times after a 502 "
        f"(row phase now {DiscordJob.objects.get(pk=row.pk).phase})"
    )
