"""Each error the bot or Discord gives → our error code, the exception class, account health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from django.utils import timezone

from apps.engines.base import PermanentEngineError, TemporaryEngineError
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import upstream_account_usable
from tests.factories import UserFactory

from .conftest import GatewayThread, job_for, poll_until_done

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_fake(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> Callable[..., tuple[UpstreamAccount, str]]:
    def make(**fake_user: Any) -> tuple[UpstreamAccount, str]:
        options = fake_user.pop("options", {})
        account, token = make_account(fake_user=fake_user, **options)
        gateway(account_ids={account.pk}).wait_connected(account.pk)
        return account, token

    return make


@pytest.mark.parametrize(
    ("prompt", "code", "reason"),
    [
        ("a bloodbath scene", "BANNED_PROMPT", "Midjourney refused the prompt."),
        ("a cat --wibble 3", "INVALID_PARAMETER", "Unrecognized parameter(s): `--wibble`"),
    ],
    ids=["banned-prompt", "invalid-parameter"],
)
def test_rejected_prompts_fail_the_task_and_leave_the_account_healthy(
    engine: DiscordEngine, on_fake: Callable[..., Any], prompt: str, code: str, reason: str
) -> None:
    account, _token = on_fake()
    job = job_for(account, prompt=prompt)
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == code
    assert reason in caught.value.message
    row = DiscordJob.objects.get(task_id=job.task_id)
    assert (row.phase, row.error_code) == (Phase.FAILURE, code)
    account.refresh_from_db()
    assert account.health == Health.HEALTHY and account.is_enabled


@pytest.mark.parametrize(
    ("trouble", "code", "health"),
    [
        ({"queue_limit": 0}, "UPSTREAM_ERROR", Health.HEALTHY),
        ({"fast_exhausted": True}, "FAST_HOURS_EXHAUSTED", Health.FAST_HOURS_EXHAUSTED),
        ({"captcha": True}, "NEEDS_VERIFICATION", Health.NEEDS_VERIFICATION),
        ({"subscribed": False}, "ACCOUNT_UNAVAILABLE", Health.NEEDS_VERIFICATION),
        ({"banned": True}, "ACCOUNT_UNAVAILABLE", Health.BANNED),
    ],
    ids=["queue-full", "fast-hours-exhausted", "captcha", "no-subscription", "blocked"],
)
def test_refusals_requeue_the_task_and_set_the_account_health(
    engine: DiscordEngine, on_fake: Callable[..., Any], trouble: dict[str, Any], code: str,
    health: str, mailoutbox: list[Any],
) -> None:  # fmt: skip
    operator = UserFactory(is_staff=True)
    UserFactory(is_staff=False)  # a customer is never told
    account, _token = on_fake(**trouble)
    job = job_for(account, prompt="a quiet harbour")
    with pytest.raises(TemporaryEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == code
    row = DiscordJob.objects.get(task_id=job.task_id)
    assert (row.phase, row.error_code) == (Phase.REFUSED, code)
    account.refresh_from_db()
    assert account.health == health
    if health != Health.HEALTHY:
        assert account.health_reason and account.health_reason == row.fail_reason[:500]
        # The operators hear of it once, with the reason.
        assert [m.to for m in mailoutbox] == [[operator.email]]
        assert account.name in mailoutbox[0].subject and row.fail_reason in mailoutbox[0].body
    else:
        assert mailoutbox == []
    # Refused means nothing runs: the engine's poll also reports it as a failure, never success.
    polled = engine.poll(replace(job, upstream_job_id=row.nonce))
    assert (polled.status, polled.error_code) == ("failure", code)


def test_fast_hours_exhausted_falls_back_to_relax_when_configured(
    engine: DiscordEngine, on_fake: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = on_fake(fast_exhausted=True, options={"fast_fallback_to_relax": True})
    job = job_for(account, prompt="a windmill")
    submitted = engine.submit(job)
    rows = list(DiscordJob.objects.filter(task_id=job.task_id).order_by("created_at"))
    assert rows[0].phase == Phase.REFUSED
    assert rows[1].prompt == "a windmill --relax"
    result = poll_until_done(engine, replace(job, upstream_job_id=submitted.upstream_job_id))
    assert result.status == "success"
    assert rows[1].pk == submitted.upstream_job_id
    # The next FAST job goes out in relax at once: no second refusal.
    refused_before = fake_discord.stats()["error:Credits exhausted"]
    again = job_for(account, prompt="a second windmill")
    engine.submit(again)
    assert DiscordJob.objects.get(task_id=again.task_id).prompt == "a second windmill --relax"
    assert fake_discord.stats()["error:Credits exhausted"] == refused_before
    # The admin still shows why: fast hours are gone (the dispatcher keeps giving it FAST work).
    account.refresh_from_db()
    assert account.health == Health.FAST_HOURS_EXHAUSTED
    assert upstream_account_usable(account, now=timezone.now(), mode="FAST")
    assert not upstream_account_usable(account, now=timezone.now(), mode="TURBO")


def test_an_invalid_token_disables_the_account(
    engine: DiscordEngine, make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = make_account()
    account.secrets = {"token": "mfa.this-token-is-not-known-to-discord"}
    account.save(update_fields=["secrets"])
    job = job_for(account)
    with pytest.raises(TemporaryEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == "ACCOUNT_UNAVAILABLE"
    account.refresh_from_db()
    assert account.is_enabled is False
    assert account.health == Health.NEEDS_VERIFICATION
    assert "401" in account.health_reason


def test_the_gateway_disables_an_account_whose_token_it_cannot_identify_with(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> None:
    account, _token = make_account()
    account.secrets = {"token": "mfa.this-token-is-not-known-to-discord"}
    account.save(update_fields=["secrets"])
    gateway(account_ids={account.pk})
    from .conftest import wait_for

    wait_for(lambda: not UpstreamAccount.objects.get(pk=account.pk).is_enabled)
    account.refresh_from_db()
    assert "4004" in account.health_reason


def test_a_follow_up_on_a_button_the_parent_lacks_is_invalid(
    engine: DiscordEngine, on_fake: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    from .conftest import parent_of

    account, _token = on_fake()
    imagine = job_for(account, prompt="a bridge")
    submitted = engine.submit(imagine)
    imagine = replace(imagine, upstream_job_id=submitted.upstream_job_id)
    grid = poll_until_done(engine, imagine)
    before = fake_discord.stats()["interactions"]
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(
            job_for(
                account, action="ZOOM", custom_id="MJ::Outpaint::50::1::abcdefabcdefabcdef::SOLO",
                parent=parent_of(imagine, grid.state),
            )
        )  # fmt: skip
    assert caught.value.error_code == "INVALID_PARAMETER"
    assert fake_discord.stats()["interactions"] == before


def test_an_outdated_command_version_is_refreshed_and_sent_once(
    engine: DiscordEngine, on_fake: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = on_fake()
    engine.submit(job_for(account, prompt="warm up the command cache"))
    fake_discord.control("commands/bump")
    before = fake_discord.stats()
    job = job_for(account, prompt="after a bot update")
    submitted = engine.submit(job)
    after = fake_discord.stats()
    assert after["outdated_commands"] == before.get("outdated_commands", 0) + 1
    assert after["interactions"] == before["interactions"] + 1
    assert after["duplicate_nonces"] == 0
    assert (
        poll_until_done(engine, replace(job, upstream_job_id=submitted.upstream_job_id)).status
        == "success"
    )


def test_a_bot_that_does_not_answer_sends_the_task_back(
    engine: DiscordEngine, on_fake: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    account, _token = on_fake(bot_offline=True)
    job = job_for(account, prompt="nobody home")
    with pytest.raises(TemporaryEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == "UPSTREAM_ERROR"
    assert "did not respond" in caught.value.message
    row = DiscordJob.objects.get(task_id=job.task_id)
    assert row.phase == Phase.REFUSED
    account.refresh_from_db()
    assert account.health == Health.HEALTHY
