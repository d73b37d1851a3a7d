"""A switched-off account is disconnected by the gateway, and its running jobs still end.

A tenant (or an operator) switches an account off: the next lease round closes its Discord
session — for an own account, the customer's token — and gives its lease back. Jobs it was
running then finish through the engine's poll, which reads the channel back over REST.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.engines.base import PollResult
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, GatewayLease
from apps.engines.services import upstream_account_set_enabled

from .conftest import GatewayThread, job_for, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def fake_discord() -> Iterator[FakeDiscordThread]:
    """A bot that takes a few seconds per job, so a job is still running when the gateway lets
    its account go (``make_account`` uses this fake in this module)."""
    fake = FakeDiscordThread(step_seconds=1.0, steps=3, heartbeat_ms=400).start()
    yield fake
    fake.stop()


def _read_back(engine: DiscordEngine, job: Any) -> PollResult | None:
    """One poll as the lifecycle makes it once the gateway has long been silent about the job."""
    DiscordJob.objects.filter(pk=job.upstream_job_id).update(
        updated_at=timezone.now() - timedelta(minutes=1)
    )
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    cache.delete(f"discord:readback:{row.account_id}:{row.channel_id}")
    result = engine.poll(job)
    return result if result.status != "running" else None


def test_a_switched_off_account_is_disconnected_and_its_running_job_still_ends(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token = make_account(submit_confirm_seconds=0)
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    job = job_for(account, prompt="a lighthouse at dusk")
    submitted = engine.submit(job)
    running = replace(job, upstream_job_id=submitted.upstream_job_id)

    upstream_account_set_enabled(account=account, enabled=False)
    wait_for(lambda: token not in fake_discord.stats()["live_sessions"])
    assert account.pk not in thread.service.connections
    wait_for(lambda: GatewayLease.objects.get(pk=account.pk).holder == "")

    result = wait_for(lambda: _read_back(engine, running), timeout=30.0, interval=0.5)
    assert result.status == "success" and result.image is not None and result.image.data

    # Switched on again: leased and connected anew.
    upstream_account_set_enabled(account=account, enabled=True)
    thread.wait_connected(account.pk)
    assert fake_discord.stats()[f"max_connections:{token}"] == 1
