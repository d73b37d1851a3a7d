"""Animate (Manual) and remixed animate/extend in the domain: the press waits in MODAL, the
second step's prompt guides the motion and sets the video, bad steps change nothing."""

from __future__ import annotations

import io

import av
import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.core.errors import ValidationFailed
from apps.tasks import storage
from apps.tasks.actions import press_spec
from apps.tasks.buttons import buttons_of, resolve_custom_id, with_implied
from apps.tasks.enums import Action, Status
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.video import task_submit_video

from .helpers import png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


def seconds(name: str) -> float:
    with av.open(io.BytesIO(storage.read_file(name))) as container:
        return (container.duration or 0) / 1_000_000


def test_the_manual_press_round_trips_and_is_implied_by_animate():
    manual = press_spec("animate_high_manual")
    custom_id = manual.custom_id(job_hash="abc-123")
    assert custom_id == "MJ::AnimateModal::abc-123::1::high::0"
    resolved = resolve_custom_id(custom_id)
    assert (resolved.action, resolved.variant, resolved.requires_modal) == (
        Action.VIDEO,
        "animate_high_manual",
        True,
    )
    animate = press_spec("animate_high").custom_id(job_hash="abc-123")
    offered = [b.custom_id for b in with_implied(buttons_of([{"custom_id": animate}]))]
    assert offered == [animate, custom_id]


def test_a_remixed_extend_asks_for_the_prompt_and_refuses_a_loop(caller, fund, organization):
    fund(organization, 1_000_000)
    sandbox_account()
    video = run_to_completion(
        task_submit_video(caller=caller, images=[png_data_url()], batch_size=1).task.pk
    )
    extend = next(
        b["custom_id"] for b in video.buttons if "animate_low_extend::1" in b["custom_id"]
    )
    waiting = task_press(caller=caller, parent_id=video.pk, custom_id=extend, remix=True).task
    assert waiting.status == Status.MODAL
    holds = LedgerEntry.objects.filter(kind=EntryKind.HOLD).count()
    with pytest.raises(ValidationFailed) as caught:
        task_submit_modal(caller=caller, task_id=waiting.pk, prompt="faster --loop")
    assert caught.value.field == "prompt"
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == holds
    task_submit_modal(caller=caller, task_id=waiting.pk, prompt="faster --bs 1")
    extended = run_to_completion(waiting.pk)
    assert extended.status == Status.SUCCESS, extended.fail_reason
    assert extended.params["manual"] is True and extended.prompt_en == "faster"
    assert 8.5 <= seconds(extended.result["videos"][0]) <= 9.5
