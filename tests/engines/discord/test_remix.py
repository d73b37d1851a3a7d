"""Remix on the discord engine: the bot's Remix form is answered with the changed prompt; a
Discord user without Remix mode cannot remix, and the task says so instead of delivering the
old prompt's picture. The editor and retexture have no bot command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.engines.base import PermanentEngineError
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.models import DiscordJob

from .conftest import GatewayThread, job_for, parent_of
from .test_engine_flow import _finished

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _remixed_variation(account: Any, imagine: Any, grid: Any) -> Any:
    pressed = next(
        b["custom_id"]
        for b in grid.state["buttons"]
        if b["custom_id"].startswith("MJ::JOB::variation::2::")
    )
    return job_for(
        account,
        action="VARIATION",
        prompt="a blue valley at night",
        custom_id=pressed,
        parent=parent_of(imagine, grid.state),
        params={"variant": "variation", "index": 2, "custom_id": pressed, "remix": True},
    )


def test_a_remixed_press_sends_the_changed_prompt_through_the_remix_form(
    engine: DiscordEngine, make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> None:
    account, _token = make_account(fake_user={"remix": True})
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    imagine, grid = _finished(engine, job_for(account, prompt="a green valley"))
    variation, varied = _finished(engine, _remixed_variation(account, imagine, grid))
    row = DiscordJob.objects.get(pk=variation.upstream_job_id)
    assert row.modal["custom_id"].startswith("MJ::RemixModal::")
    assert row.bot_prompt.startswith("a blue valley at night")
    assert varied.is_grid is True


def test_without_remix_mode_a_remixed_press_fails_clearly(
    engine: DiscordEngine, make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> None:
    account, _token = make_account(fake_user={"remix": False})
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    imagine, grid = _finished(engine, job_for(account, prompt="a green valley"))
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(_remixed_variation(account, imagine, grid))
    assert caught.value.error_code == "UNSUPPORTED_BY_UPSTREAM"
    assert "Remix mode" in caught.value.message


@pytest.mark.parametrize("action", ["EDIT", "RETEXTURE"])
def test_the_editor_is_unsupported(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    action: str,
) -> None:
    account, _token = make_account()
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(job_for(account, action=action, prompt="a red door"))
    assert caught.value.error_code == "UNSUPPORTED_BY_UPSTREAM"
