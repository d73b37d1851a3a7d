"""Buttons on results and the follow-ups they start (SPEC §4.3), run in-process."""

from __future__ import annotations

import pytest

from apps.accounts.models import MembershipTier
from apps.engines.base import _REGISTRY
from apps.engines.models import Health
from apps.engines.sandbox.engine import SandboxEngine
from apps.engines.services import upstream_account_create
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.prompt import numbered_prompts
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit

from .helpers import button_id, png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

GRID_LABELS = ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
UPSCALE_LABELS = [
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "",
    "",
    "",
    "",
    "Animate (High motion)",
    "Animate (Low motion)",
    "",
]


@pytest.fixture(autouse=True)
def premium(organization, fund):
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)


def press(caller, parent: Task, **which: str) -> Task:
    outcome = task_press(caller=caller, parent_id=parent.pk, custom_id=button_id(parent, **which))
    return run_to_completion(outcome.task.pk)


def custom_ids(task: Task) -> list[str]:
    return [b["custom_id"] for b in task.buttons]


# --- which buttons which result carries ------------------------------------------------------


@pytest.mark.slow
def test_buttons_on_every_kind_of_result(caller):
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    job_hash = grid.properties["jobHash"]
    assert [b["label"] for b in grid.buttons] == GRID_LABELS
    assert custom_ids(grid) == [
        *(f"MJ::JOB::upsample::{n}::{job_hash}" for n in range(1, 5)),
        f"MJ::JOB::reroll::0::{job_hash}::SOLO",
        *(f"MJ::JOB::variation::{n}::{job_hash}" for n in range(1, 5)),
    ]
    assert {(b["type"], b["style"]) for b in grid.buttons} == {(2, 2)}

    upscale = press(caller, grid, label="U1")
    up_hash = upscale.properties["jobHash"]
    assert up_hash != job_hash
    assert [b["label"] for b in upscale.buttons] == UPSCALE_LABELS
    assert custom_ids(upscale) == [
        f"MJ::JOB::upsample_v6_2x_subtle::1::{up_hash}::SOLO",
        f"MJ::JOB::upsample_v6_2x_creative::1::{up_hash}::SOLO",
        f"MJ::JOB::low_variation::1::{up_hash}::SOLO",
        f"MJ::JOB::high_variation::1::{up_hash}::SOLO",
        f"MJ::Inpaint::1::{up_hash}::SOLO",
        f"MJ::Outpaint::50::1::{up_hash}::SOLO",
        f"MJ::Outpaint::75::1::{up_hash}::SOLO",
        f"MJ::CustomZoom::{up_hash}",
        *(f"MJ::JOB::pan_{d}::1::{up_hash}::SOLO" for d in ("left", "right", "up", "down")),
        f"MJ::JOB::animate_high::1::{up_hash}::SOLO",
        f"MJ::JOB::animate_low::1::{up_hash}::SOLO",
        f"MJ::JOB::reroll::0::{up_hash}::SOLO",
    ]

    # Grid-making follow-ups end with grid buttons again, of grids and of upscales.
    assert [b["label"] for b in press(caller, grid, label="V3").buttons] == GRID_LABELS
    assert [b["label"] for b in press(caller, upscale, part="pan_down").buttons] == GRID_LABELS

    described = run_to_completion(
        task_submit(caller=caller, action=Action.DESCRIBE, images=[png_data_url()]).task.pk
    )
    assert custom_ids(described) == [
        *(f"MJ::Job::PicReader::{n}" for n in range(1, 5)),
        "MJ::Picread::Retry",
    ]
    assert [b["emoji"] for b in described.buttons] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "🔄"]

    shortened = run_to_completion(
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a long winding road").task.pk
    )
    assert custom_ids(shortened) == [f"MJ::Job::PromptAnalyzer::{n}" for n in range(1, 6)]

    swapped = run_to_completion(
        task_submit(
            caller=caller,
            action=Action.SWAP_FACE,
            images=[png_data_url((250, 200, 150)), png_data_url((20, 90, 20))],
        ).task.pk
    )
    assert swapped.status == Status.SUCCESS
    assert swapped.buttons == []
    assert swapped.result["is_grid"] is False

    blend = run_to_completion(
        task_submit(
            caller=caller, action=Action.BLEND, images=[png_data_url(), png_data_url((0, 0, 250))]
        ).task.pk
    )
    assert [b["label"] for b in blend.buttons] == GRID_LABELS


# --- what a follow-up inherits ---------------------------------------------------------------


def test_follow_ups_inherit_the_parents_mode_and_prompt(caller):
    sandbox_account()
    grid = run_to_completion(
        task_submit(
            caller=caller, action=Action.IMAGINE, prompt="a red barn --ar 3:2 --relax"
        ).task.pk
    )
    assert grid.mode == Mode.RELAX
    upscale = press(caller, grid, label="U2")
    assert (upscale.mode, upscale.action, upscale.parent_id) == (
        Mode.RELAX,
        Action.UPSCALE,
        grid.pk,
    )
    assert upscale.prompt_en == "a red barn --ar 3:2"
    assert upscale.params == {
        "variant": "upsample",
        "index": 2,
        "custom_id": button_id(grid, label="U2"),
    }
    assert upscale.price == 1750  # UPSCALE in RELAX
    zoom = press(caller, upscale, label="Zoom Out 2x")
    assert (zoom.mode, zoom.action, zoom.params["zoom_factor"]) == (Mode.RELAX, Action.ZOOM, 2.0)
    pan = press(caller, upscale, part="pan_up")
    assert (pan.action, pan.params["pan_direction"]) == (Action.PAN, "up")


@pytest.mark.slow
def test_follow_ups_go_to_the_parents_account_while_it_is_healthy(caller):
    first = sandbox_account("first")
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    assert grid.upstream_account == first
    # A second, idle account: least busy, yet the follow-up prefers the parent's account.
    second = sandbox_account("second")
    sandbox_account("third")
    task_submit(caller=caller, action=Action.SHORTEN, prompt="keep the first one busy")
    dispatch_pending()  # what the dispatch message does on a worker
    assert Task.objects.filter(upstream_account=first, status=Status.SUBMITTED).count() == 1
    upscale = press(caller, grid, label="U1")
    assert upscale.upstream_account == first

    # Once it is unhealthy the sandbox (which needs no parent account) uses another one.
    first.health = Health.BANNED
    first.save(update_fields=["health"])
    variation = press(caller, grid, label="V1")
    assert variation.upstream_account == second  # least busy of the healthy ones, then by id


@pytest.fixture
def strict_engine():
    """A sandbox whose follow-ups must run on the parent's account (like a Discord account)."""

    class StrictSandbox(SandboxEngine):
        name = "strict-sandbox"
        follow_ups_need_parent_account = True

    _REGISTRY[StrictSandbox.name] = StrictSandbox()
    yield StrictSandbox.name
    del _REGISTRY[StrictSandbox.name]


def test_follow_ups_that_need_the_parents_account_wait_for_it(caller, strict_engine):
    def account(name: str):
        return upstream_account_create(
            engine=strict_engine, name=name, modes=["FAST"], concurrency=1, options={"duration": 0}
        )

    first = account("strict-1")
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    assert grid.upstream_account == first
    second = account("strict-2")
    busy = task_submit(caller=caller, action=Action.SHORTEN, prompt="fill the first account")
    dispatch_pending()  # what the dispatch message does on a worker
    assert Task.objects.get(pk=busy.task.pk).upstream_account == first

    waiting = task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U4"))
    assert waiting.result == SubmitOutcome.QUEUED  # the idle second account is not an option
    assert dispatch_pending().assigned == []
    run_to_completion(busy.task.pk)  # the parent's account frees a slot
    upscale = run_to_completion(waiting.task.pk)
    assert upscale.upstream_account == first
    assert Task.objects.filter(upstream_account=second).count() == 0


# --- two-step flows --------------------------------------------------------------------------


def test_describe_then_imagine_with_a_described_prompt(caller):
    sandbox_account()
    described = run_to_completion(
        task_submit(
            caller=caller, action=Action.DESCRIBE, images=[png_data_url((10, 80, 200))]
        ).task.pk
    )
    prompts = described.properties["prompts"]
    assert len(prompts) == 4
    assert numbered_prompts(described.properties["finalPrompt"]) == prompts

    modal = task_press(caller=caller, parent_id=described.pk, custom_id="MJ::Job::PicReader::3")
    assert modal.result == SubmitOutcome.MODAL
    assert (modal.task.action, modal.task.status) == (Action.IMAGINE, Status.MODAL)
    assert modal.task.prompt_en == prompts[2]
    imagine = run_to_completion(task_submit_modal(caller=caller, task_id=modal.task.pk).task.pk)
    assert imagine.status == Status.SUCCESS
    assert imagine.prompt_en == prompts[2]
    assert imagine.price == 14000
    assert [b["label"] for b in imagine.buttons] == GRID_LABELS

    # The retry describes the same image again.
    retry = press(caller, described, part="Picread::Retry")
    assert retry.action == Action.DESCRIBE
    assert retry.inputs == described.inputs
    assert retry.properties["prompts"] == prompts  # the sandbox describes deterministically


def test_shorten_then_imagine_with_a_shortened_prompt(caller):
    sandbox_account()
    shortened = run_to_completion(
        task_submit(
            caller=caller,
            action=Action.SHORTEN,
            prompt="a very detailed, intricate oil painting of an old red barn in the snow",
        ).task.pk
    )
    prompts = shortened.properties["prompts"]
    assert len(prompts) == 5
    modal = task_press(
        caller=caller, parent_id=shortened.pk, custom_id="MJ::Job::PromptAnalyzer::5"
    )
    assert modal.task.prompt_en == prompts[4]
    edited = task_submit_modal(
        caller=caller, task_id=modal.task.pk, prompt=f"{prompts[4]} --ar 2:3"
    )
    imagine = run_to_completion(edited.task.pk)
    assert imagine.status == Status.SUCCESS
    assert imagine.prompt_en == f"{prompts[4]} --ar 2:3"
    assert imagine.result["height"] > imagine.result["width"]


def test_numbered_prompts_are_read_from_final_prompt_when_no_list_is_kept(caller):
    sandbox_account()
    shortened = run_to_completion(
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road home").task.pk
    )
    # An upstream engine that only reports the text (as midjourney-proxy does).
    Task.objects.filter(pk=shortened.pk).update(
        properties={"finalPrompt": "Analysis\n\n1️⃣ long road home\n\n2️⃣ road home\n\n3️⃣ road"}
    )
    modal = task_press(
        caller=caller, parent_id=shortened.pk, custom_id="MJ::Job::PromptAnalyzer::2"
    )
    assert modal.task.prompt_en == "road home"
    with pytest.raises(Exception) as info:
        task_press(caller=caller, parent_id=shortened.pk, custom_id="MJ::Job::PromptAnalyzer::4")
    assert info.value.message == "The parent task has no prompt with that number."


def test_vary_region_repaints_only_the_masked_area(caller):
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    upscale = press(caller, grid, label="U1")
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    )
    assert (modal.task.action, modal.task.status) == (Action.VARIATION, Status.MODAL)
    queued = task_submit_modal(
        caller=caller,
        task_id=modal.task.pk,
        prompt="a blue door",
        mask=png_data_url((255, 255, 255), (32, 32)),
    )
    region = run_to_completion(queued.task.pk)
    assert region.status == Status.SUCCESS
    assert region.prompt_en == "a blue door"
    assert region.params["mask"].startswith("inputs/")
    assert region.price == 14000


def test_reroll_of_a_blend_blends_the_same_images_again(caller):
    sandbox_account()
    blend = run_to_completion(
        task_submit(
            caller=caller,
            action=Action.BLEND,
            images=[png_data_url(), png_data_url((0, 0, 250))],
            dimensions="PORTRAIT",
        ).task.pk
    )
    reroll = press(caller, blend, part="reroll")
    assert reroll.action == Action.REROLL
    assert reroll.inputs == blend.inputs
    assert reroll.params["reroll_of"] == Action.BLEND
    assert reroll.params["dimensions"] == "PORTRAIT"
    assert reroll.result["height"] > reroll.result["width"]
    again = press(caller, reroll, part="reroll")
    assert again.params["reroll_of"] == Action.BLEND
