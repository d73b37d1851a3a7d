"""``manage.py discord_gateway``: it pushes to the lifecycle, or refuses to start without it."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.engines.base import JobUpdate, PollResult
from apps.engines.discord.management.commands import discord_gateway
from apps.tasks import lifecycle


def test_without_the_lifecycle_entry_point_the_gateway_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(lifecycle, "task_apply_update", raising=False)
    with pytest.raises(CommandError, match=r"no apps\.tasks\.lifecycle\.task_apply_update"):
        call_command("discord_gateway")


def test_the_sink_hands_each_update_to_the_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[Any] = []
    monkeypatch.setattr(
        lifecycle, "task_apply_update", lambda *, update: applied.append(update), raising=False
    )
    sink = discord_gateway._lifecycle_sink()
    assert sink is not None
    update = JobUpdate(account_id=1, upstream_job_id="n1", result=PollResult(status="running"))
    sink(update)
    assert applied == [update]
