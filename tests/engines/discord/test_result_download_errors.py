"""A finished job whose result cannot be downloaded: the task fails, the account stays healthy.

Discord's CDN answering 404 (the attachment deleted, its signed link expired), a link off the
account's CDN, a file over 50 MiB: downloading again cannot help. Read as temporary, the
lifecycle polled (downloading again) until the run timeout with the hold kept, and counted
each poll as the account's failure, cooling a healthy account down. Such a result fails the
task with the reason; an expired link is first renewed from the message; the network's or the
CDN's passing trouble is still polled again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from apps.engines.discord import options as discord_options
from apps.engines.discord import tracker
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.fake.render import grid_png
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.discord.rest import DiscordRest
from apps.engines.models import Health, UpstreamAccount
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_poll
from apps.tasks.models import Task
from tests.factories import TaskFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _posted_image(account: UpstreamAccount) -> dict[str, Any]:
    """A message with a PNG attachment in the account's channel, as the fake Discord serves
    it (its ``attachments[0]["url"]`` is on the fake's CDN)."""
    settings = discord_options.parse(account.options, account.secrets)
    rest = DiscordRest(account_id=account.pk, settings=settings)
    try:
        uploaded = rest.upload(settings.channel_id, "grid_0.png", grid_png("result"))
        return rest.post_message(
            settings.channel_id,
            content="",
            attachments=[{"id": "0", "filename": "grid_0.png", "uploaded_filename": uploaded}],
        )
    finally:
        rest.close()


def _finished(account: UpstreamAccount, organization: Any, image_url: str, message_id: str) -> Task:
    """A running task whose Discord job the bot finished with ``image_url``."""
    nonce = str(uuid.uuid4().int)[:19]
    task = TaskFactory(
        running=True,
        organization=organization,
        engine="discord",
        upstream_account=account,
        upstream_job_id=nonce,
        poll_token="download-test",
    )
    DiscordJob.objects.create(
        nonce=nonce,
        account=account,
        task_id=task.pk,
        action=Action.IMAGINE,
        command="imagine",
        phase=Phase.SUCCESS,
        bot_id="936929561302675456",
        channel_id=account.options["channel_id"],
        progress=100,
        image_url=image_url,
        is_grid=True,
        result_message_id=message_id,
    )
    return task


def _poll(task: Task, times: int = 3) -> Task:
    for _ in range(times):
        task_poll(task_id=task.pk, token="download-test")
    task.refresh_from_db()
    return task


@pytest.mark.parametrize("where", ["cdn-404", "foreign-origin", "too-large"])
def test_a_result_that_cannot_be_downloaded_fails_the_task_not_the_account(
    organization: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    account, _token = make_account()
    posted = _posted_image(account)
    url = str(posted["attachments"][0]["url"])
    if where == "cdn-404":
        # Deleted from the CDN: the message no longer names it either.
        url, message_id = f"{fake_discord.url}/attachments/1/2/gone.png", ""
    elif where == "foreign-origin":
        url, message_id = "https://cdn.example.net/attachments/1/2/grid_0.png", str(posted["id"])
    else:
        monkeypatch.setattr(tracker, "MAX_IMAGE_BYTES", 1024)
        message_id = str(posted["id"])
    task = _poll(_finished(account, organization, url, message_id))

    reason = {
        "cdn-404": "no longer has the result (404)",
        "foreign-origin": "not the account's CDN",
        "too-large": "larger than",
    }[where]
    assert task.status == Status.FAILURE, (task.status, task.fail_reason)
    assert reason in task.fail_reason
    assert not task.tokens_captured  # nothing charged: the hold is released
    account.refresh_from_db()
    assert account.health == Health.HEALTHY, (account.health, account.health_reason)


def test_an_expired_result_link_is_renewed_from_the_message(
    organization: Any, make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = make_account()
    posted = _posted_image(account)
    fresh = str(posted["attachments"][0]["url"])
    expired = f"{fake_discord.url}/attachments/1/2/expired.png"
    task = _poll(_finished(account, organization, expired, str(posted["id"])), times=1)

    assert task.status == Status.SUCCESS, (task.status, task.fail_reason)
    assert DiscordJob.objects.get(task_id=task.pk).image_url == fresh
