"""Invalid submits are rejected with a clear message and create nothing (SPEC §4.5).

Every case checks the same four things stayed put: task rows, ledger entries, the balance
and the files in storage.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from apps.accounts.models import MembershipTier
from apps.billing.models import LedgerEntry, Price
from apps.billing.selectors import balance_get
from apps.core.errors import (
    BannedPrompt,
    ConcurrencyLimitReached,
    InsufficientBalance,
    NotFound,
    ValidationFailed,
)
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.errors import InputError, ParentNotFound
from apps.tasks.models import BannedWord, Task
from apps.tasks.services.inputs import Caller, ClientEcho
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit

from .helpers import (
    button_id,
    data_url,
    png_bytes,
    png_data_url,
    png_header_only,
    run_to_completion,
    sandbox_account,
    stored_files,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded(organization, fund):
    fund(organization, 1_000_000)
    sandbox_account()
    return organization


@pytest.fixture
def unchanged(funded) -> Callable[[], Any]:
    """Call before the attempt; the returned checker asserts nothing changed since."""

    def state() -> tuple[Any, ...]:
        balance = balance_get(organization=funded)
        return (
            Task.objects.count(),
            LedgerEntry.objects.count(),
            (balance.available, balance.held),
            stored_files(settings.MEDIA_ROOT),
        )

    def start() -> Callable[[], None]:
        before = state()

        def check() -> None:
            assert state() == before

        return check

    return start


@pytest.fixture
def grid(funded, caller) -> Task:
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn")
    return run_to_completion(outcome.task.pk)


def rejected(error: type[Exception], call: Callable[[], Any]) -> Any:
    with pytest.raises(error) as info:
        call()
    # Exactly this kind of error (a banned prompt is not "a validation error"); an InputError
    # is a validation error that names its field, which the dialects translate.
    assert type(info.value) is error or (
        error is ValidationFailed and type(info.value) is InputError
    )
    return info.value


# --- new tasks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"action": Action.IMAGINE, "prompt": "a cat --foo 1"},
            "Unknown parameter --foo.",
        ),
        (
            {"action": Action.IMAGINE, "prompt": "a cat --ar 0:1"},
            "--ar must be a ratio of two positive whole numbers, like 16:9; got '0:1'.",
        ),
        (
            {"action": Action.BLEND, "images": [png_data_url()] * 6},
            "images must contain between 2 and 5 images; got 6.",
        ),
        (
            {"action": Action.BLEND, "images": [png_data_url()]},
            "images must contain between 2 and 5 images; got 1.",
        ),
        (
            {"action": Action.DESCRIBE, "images": [data_url(b"hello, not an image", "image/png")]},
            "images[0] is not an image; send a PNG, JPEG, WEBP or GIF.",
        ),
        (
            {"action": Action.DESCRIBE, "images": [data_url(png_header_only(30000, 30000))]},
            "images[0] has more than 40,000,000 pixels, the maximum.",
        ),
        (
            {"action": Action.SWAP_FACE, "images": [png_data_url()]},
            "Face swap needs a source and a target image.",
        ),
        (
            {"action": Action.VIDEO, "images": [png_data_url()], "mask": png_data_url()},
            "VIDEO takes no mask; only the editor (EDIT) does.",
        ),
        (
            {"action": "UPSCALE", "prompt": "a cat"},
            "Unknown action 'UPSCALE'. Use IMAGINE, DESCRIBE, BLEND, SHORTEN, SWAP_FACE, "
            "VIDEO, EDIT or RETEXTURE; follow-ups (upscale, variation …) are submitted with a "
            "parent task and a button.",
        ),
        (
            {"action": "PAINT", "prompt": "a cat"},
            "Unknown action 'PAINT'. Use IMAGINE, DESCRIBE, BLEND, SHORTEN, SWAP_FACE, "
            "VIDEO, EDIT or RETEXTURE; follow-ups (upscale, variation …) are submitted with a "
            "parent task and a button.",
        ),
        (
            {"action": Action.IMAGINE, "prompt": "a cat", "mode": "LUDICROUS"},
            "Unknown mode 'LUDICROUS'. Use FAST, RELAX (or NORMAL) or TURBO.",
        ),
        (
            {"action": Action.IMAGINE, "prompt": ""},
            "The prompt is empty; describe the image you want.",
        ),
        (
            {
                "action": Action.BLEND,
                "images": [png_data_url(), png_data_url()],
                "dimensions": "WIDE",
            },
            "dimensions must be PORTRAIT, SQUARE or LANDSCAPE; got 'WIDE'.",
        ),
        (
            {
                "action": Action.IMAGINE,
                "prompt": "a cat",
                "echo": ClientEcho(notify_hook="ftp://example.com/hook"),
            },
            "The notify hook must be an http(s) URL of at most 2048 characters.",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_submit_is_rejected_and_creates_nothing(caller, unchanged, kwargs, message):
    check = unchanged()
    error = rejected(ValidationFailed, lambda: task_submit(caller=caller, **kwargs))
    assert error.message == message
    check()


def test_a_file_stored_for_an_earlier_valid_image_is_removed_when_a_later_one_fails(
    caller, unchanged
):
    # The first image is fine; the second is not. Validation runs before anything is stored.
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_submit(
            caller=caller,
            action=Action.BLEND,
            images=[png_data_url(), base64.b64encode(b"GIF89a broken").decode()],
        ),
    )
    assert error.message.startswith("images[1] ")
    assert error.details["field"] == "images[1]"
    check()


def test_banned_word_is_rejected_with_the_word(caller, unchanged):
    BannedWord.objects.create(word="Gore")
    check = unchanged()
    error = rejected(
        BannedPrompt,
        lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt="lots of GORE here"),
    )
    assert error.banned_word == "gore"
    assert error.message == "The prompt contains the banned word 'gore'."
    check()
    # Whole words only: "gorey" is not "gore".
    assert task_submit(caller=caller, action=Action.IMAGINE, prompt="edward gorey style").task
    BannedWord.objects.filter(word="gore").update(is_active=False)
    assert task_submit(caller=caller, action=Action.IMAGINE, prompt="lots of gore").task


def test_banned_word_in_shorten_is_rejected(caller, unchanged):
    BannedWord.objects.create(word="gore")
    check = unchanged()
    rejected(BannedPrompt, lambda: task_submit(caller=caller, action=Action.SHORTEN, prompt="gore"))
    check()


def test_insufficient_balance_is_rejected(caller, unchanged):
    # ``funded`` gave the organization 1,000,000 tokens.
    Price.objects.filter(action=Action.IMAGINE, mode=Mode.FAST).update(tokens=1_000_001)
    check = unchanged()
    error = rejected(
        InsufficientBalance,
        lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat"),
    )
    assert error.message == "Insufficient balance: 1000001 tokens needed, 1000000 available."
    check()


def test_mode_outside_the_tier_is_rejected(organization, caller, unchanged):
    tier = organization.tier
    tier.allowed_modes = [Mode.RELAX]
    tier.save(update_fields=["allowed_modes"])
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat --fast"),
    )
    assert error.message == "The Free plan does not include FAST mode."
    check()
    assert task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat --relax").task


def test_tier_limit_is_rejected_with_the_limit(caller, unchanged):
    for n in range(3):
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a very long road {n}")
    check = unchanged()
    error = rejected(
        ConcurrencyLimitReached,
        lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt="one too many"),
    )
    assert error.message == (
        "Your Free plan allows 3 unfinished tasks at once; wait for one to finish or upgrade "
        "your plan."
    )
    check()


# --- follow-ups ------------------------------------------------------------------------------


def test_follow_up_on_an_unfinished_parent_is_rejected(caller, unchanged):
    parent = task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat").task
    custom_id = f"MJ::JOB::upsample::1::{'a' * 32}"
    for status in (Status.SUBMITTED, Status.IN_PROGRESS, Status.FAILURE, Status.CANCEL):
        Task.objects.filter(pk=parent.pk).update(status=status)
        check = unchanged()
        error = rejected(
            ValidationFailed,
            lambda: task_press(caller=caller, parent_id=parent.pk, custom_id=custom_id),
        )
        assert error.message == (
            f"The parent task is {status}; buttons work only on a task that succeeded."
        )
        check()


def test_custom_id_the_parent_lacks_is_rejected(caller, unchanged, grid):
    check = unchanged()
    foreign = "MJ::JOB::upsample::1::0123456789abcdef0123456789abcdef"
    error = rejected(
        ValidationFailed,
        lambda: task_press(caller=caller, parent_id=grid.pk, custom_id=foreign),
    )
    assert error.message.startswith(f"The parent task has no button '{foreign}'. It offers: ")
    assert button_id(grid, label="U1") in error.message
    check()


def test_custom_id_of_an_upscale_on_a_grid_is_rejected(caller, unchanged, grid):
    job_hash = grid.properties["jobHash"]
    check = unchanged()
    rejected(
        ValidationFailed,
        lambda: task_press(
            caller=caller, parent_id=grid.pk, custom_id=f"MJ::Inpaint::1::{job_hash}::SOLO"
        ),
    )
    check()


@pytest.mark.parametrize("mode", ["RELAX", "turbo", "NORMAL"])
def test_follow_up_in_another_mode_than_the_parent_is_rejected(caller, unchanged, grid, mode):
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_press(
            caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1"), mode=mode
        ),
    )
    assert error.message == f"Follow-ups run in the parent's mode (FAST); {mode} was requested."
    check()


def test_follow_up_via_another_path_mode_is_rejected(caller, unchanged, grid):
    check = unchanged()
    rejected(
        ValidationFailed,
        lambda: task_press(
            caller=caller,
            parent_id=grid.pk,
            custom_id=button_id(grid, label="U1"),
            path_mode="RELAX",
        ),
    )
    check()


def test_follow_up_naming_the_parent_mode_is_accepted(caller, grid):
    outcome = task_press(
        caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1"), mode="fast"
    )
    assert outcome.task.mode == Mode.FAST


def test_follow_up_on_another_tenants_task_is_parent_not_found(
    grid, other_organization, outsider_key, fund, unchanged
):
    fund(other_organization, 100_000)
    outsider = Caller(organization=other_organization, api_key=outsider_key.api_key)
    check = unchanged()
    error = rejected(
        ParentNotFound,
        lambda: task_press(
            caller=outsider, parent_id=grid.pk, custom_id=button_id(grid, label="U1")
        ),
    )
    assert error.message == "The parent task does not exist."
    check()


def test_unknown_custom_id_is_rejected(caller, unchanged, grid):
    check = unchanged()
    rejected(
        ValidationFailed,
        lambda: task_press(caller=caller, parent_id=grid.pk, custom_id="MJ::Nope"),
    )
    check()


# --- the MODAL second step ---------------------------------------------------------------------


@pytest.fixture
def upscale(caller, grid) -> Task:
    outcome = task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1"))
    return run_to_completion(outcome.task.pk)


def test_vary_region_without_a_mask_is_rejected(caller, unchanged, upscale):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    check = unchanged()
    for mask in (None, ""):
        error = rejected(
            ValidationFailed,
            lambda mask=mask: task_submit_modal(caller=caller, task_id=modal.pk, mask=mask),
        )
        assert error.message == ("Vary (Region) needs mask: the area to change, white on black.")
    check()
    assert Task.objects.get(pk=modal.pk).status == Status.MODAL


def test_vary_region_with_a_mask_that_is_not_an_image_is_rejected(caller, unchanged, upscale):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_submit_modal(caller=caller, task_id=modal.pk, mask=data_url(b"no")),
    )
    assert error.message.startswith("mask ")
    assert error.details["field"] == "mask"
    check()


def test_custom_zoom_without_a_zoom_value_is_rejected(caller, unchanged, upscale):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_submit_modal(caller=caller, task_id=modal.pk, prompt="a red barn"),
    )
    assert error.message == "Custom zoom needs a prompt with --zoom between 1 and 2."
    for prompt in ("a red barn --zoom 2.5", "a red barn --zoom 0.5"):
        rejected(
            ValidationFailed,
            lambda prompt=prompt: task_submit_modal(caller=caller, task_id=modal.pk, prompt=prompt),
        )
    check()


def test_modal_prompt_asking_for_another_mode_is_rejected(caller, unchanged, upscale):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    check = unchanged()
    error = rejected(
        ValidationFailed,
        lambda: task_submit_modal(
            caller=caller, task_id=modal.pk, prompt="a red barn --zoom 1.5 --relax"
        ),
    )
    assert error.message == (
        "Follow-ups run in the parent's mode (FAST); the prompt asks for RELAX."
    )
    check()


def test_modal_submit_of_a_task_not_waiting_is_rejected(caller, unchanged, grid):
    check = unchanged()
    error = rejected(
        ValidationFailed, lambda: task_submit_modal(caller=caller, task_id=grid.pk, prompt="x")
    )
    assert error.message == "The task is SUCCESS, not waiting for input."
    rejected(NotFound, lambda: task_submit_modal(caller=caller, task_id="nope", prompt="x"))
    check()


def test_modal_submit_with_a_banned_word_is_rejected(caller, unchanged, upscale):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    BannedWord.objects.create(word="gore")
    check = unchanged()
    rejected(
        BannedPrompt,
        lambda: task_submit_modal(
            caller=caller, task_id=modal.pk, prompt="gore", mask=data_url(png_bytes())
        ),
    )
    check()


def test_modal_submit_over_the_tier_limit_is_rejected_and_keeps_waiting(
    caller, unchanged, upscale, organization
):
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    organization.tier = MembershipTier.objects.get(code="FREE")
    for n in range(3):
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a very long road {n}")
    check = unchanged()
    rejected(
        ConcurrencyLimitReached,
        lambda: task_submit_modal(caller=caller, task_id=modal.pk, prompt="a barn --zoom 1.5"),
    )
    check()
    assert Task.objects.get(pk=modal.pk).status == Status.MODAL
