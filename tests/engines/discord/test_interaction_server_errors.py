"""A 5xx from Discord on the interaction POST: the interaction may have been dispatched.

Discord's API can fail after it handed the interaction on (a 500), and its edge answers 502,
503 or 504 when the API reset or took too long, also after the request reached it. Read as
"not sent", the task went back to the queue and was sent again, maybe on another account,
while the first job ran: two Midjourney jobs for one task. The outcome is unknown instead:
the job's row stays, and the look-up before any new send adopts the job that runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from apps.engines.base import SubmitOutcomeUnknown
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, Phase
from apps.tasks.lifecycle import INTERRUPTED_SUBMITS

from .conftest import GatewayThread, job_for, poll_until_done

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_the_interaction_is_an_unknown_outcome_and_the_job_is_adopted(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
    status: int,
) -> None:
    account, _token = make_account(fake_user={"interaction_errors": 1, "interaction_error": status})
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    sent_before = fake_discord.stats().get("interactions_received:2", 0)
    job = job_for(account, prompt="a lighthouse at dusk")

    with pytest.raises(SubmitOutcomeUnknown) as caught:
        engine.submit(job)

    assert str(status) in caught.value.message
    assert fake_discord.stats()[f"interaction_errors:{status}"] >= 1
    row = DiscordJob.objects.get(task_id=job.task_id)
    assert row.phase != Phase.REFUSED, row.fail_reason
    assert row.sending_at is not None
    # The lifecycle's next start looks the interrupted submit up first: the job Discord
    # dispatched (acknowledged on the gateway) is adopted, and nothing is sent again.
    retry = replace(job, state={INTERRUPTED_SUBMITS: 1})
    found = engine.find_job(retry)
    assert found is not None and found.upstream_job_id == row.nonce
    assert engine.submit(retry).upstream_job_id == row.nonce
    result = poll_until_done(engine, replace(job, upstream_job_id=row.nonce))
    assert result.status == "success"
    assert result.image is not None and result.image.data
    assert fake_discord.stats()["interactions_received:2"] - sent_before == 1
    assert DiscordJob.objects.filter(task_id=job.task_id).count() == 1
