"""Video on the discord engine: refused clearly before anything is sent to Discord."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from apps.engines.base import PermanentEngineError
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob
from apps.tasks.enums import ErrorCode

from .conftest import GatewayThread, job_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_video_job_is_unsupported_and_sends_nothing(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _token = make_account()
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    before = fake_discord.stats()
    job = job_for(account, action="VIDEO", prompt="", images=(_png(),), params={"motion": "low"})
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == ErrorCode.UNSUPPORTED_BY_UPSTREAM
    assert "sandbox" in caught.value.message
    assert not DiscordJob.objects.filter(task_id=job.task_id).exists()
    assert fake_discord.stats() == before
