"""The discord tables in the operator admin: visible to staff, never editable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.engines.discord.leases import lease_acquire
from apps.engines.discord.models import DiscordJob
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db]


def test_staff_see_leases_and_jobs_read_only(make_account: Callable[..., Any]) -> None:
    account, _token = make_account()
    lease_acquire(account_id=account.pk, holder="gw-host:123")
    DiscordJob.objects.create(
        nonce="1111111111111",
        account=account,
        task_id="t" * 32,
        action="IMAGINE",
        command="imagine",
        bot_id="936929561302675456",
        channel_id="1",
        phase="failure",
        error_code="BANNED_PROMPT",
    )
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    leases = client.get("/admin/discord_engine/gatewaylease/")
    assert leases.status_code == 200 and b"gw-host:123" in leases.content
    jobs = client.get("/admin/discord_engine/discordjob/?q=1111111111111")
    assert jobs.status_code == 200 and b"BANNED_PROMPT" in jobs.content
    assert client.get("/admin/discord_engine/discordjob/add/").status_code == 403
