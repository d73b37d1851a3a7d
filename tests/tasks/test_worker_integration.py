"""Every action end to end through a real Celery worker on Redis and PostgreSQL (not eager).

The test process accepts tasks through the services (as the API views do) and dispatches
inline; the worker subprocess submits to the sandbox engine, polls, stores the images in the
shared media folder and settles the holds. Images are fetched through the public ``/files/``
URLs and opened with Pillow.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterable

import pytest
from django.conf import settings
from django.test import Client
from PIL import Image

from apps.accounts.models import MembershipTier
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.models import SandboxJob
from apps.tasks.enums import TERMINAL_STATUSES, Action, ErrorCode, Mode, Status
from apps.tasks.models import Task
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.storage import file_url
from tests.integration_support import WAIT_TIMEOUT, ProgressWatcher

from .helpers import png_data_url, sandbox_account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def wait_terminal(ids: Iterable[str], *, timeout: float = WAIT_TIMEOUT) -> dict[str, Task]:
    ids = list(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = {t.pk: t for t in Task.objects.filter(pk__in=ids)}
        if len(tasks) == len(ids) and all(t.status in TERMINAL_STATUSES for t in tasks.values()):
            return tasks
        time.sleep(0.05)
    states = dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))
    raise AssertionError(f"tasks did not finish within {timeout} s: {states}")


def fetch_image(client: Client, name: str) -> Image.Image:
    """Download a stored file through its public URL, without credentials."""
    url = file_url(name)
    assert url is not None and url.startswith(f"{settings.PUBLIC_BASE_URL}/files/")
    response = client.get(url.removeprefix(settings.PUBLIC_BASE_URL))
    assert response.status_code == 200
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    image.load()
    return image


def button(task: Task, *, label: str = "", custom_id_part: str = "") -> str:
    for candidate in task.buttons:
        if label and candidate["label"] == label:
            return str(candidate["custom_id"])
        if custom_id_part and custom_id_part in candidate["custom_id"]:
            return str(candidate["custom_id"])
    raise AssertionError(f"{task.action} {task.pk} has no button {label or custom_id_part}")


def assert_images(client: Client, task: Task) -> None:
    assert task.status == Status.SUCCESS, (task.action, task.fail_reason)
    grid = fetch_image(client, task.result["image"])
    assert grid.size == (task.result["width"], task.result["height"])
    fetch_image(client, task.result["thumb"])
    if task.result["is_grid"]:
        assert len(task.result["splits"]) == 4
        for name in task.result["splits"]:
            assert fetch_image(client, name).size == (grid.width // 2, grid.height // 2)


def test_every_action_runs_to_success_on_a_real_worker(celery_worker, organization, live_key, fund):
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 2_000_000)
    # FAST and RELAX only: a TURBO task stays queued, which the cancel below needs.
    # Jobs take 2 s: about ten 0.2 s poll steps, so progress shows even on a busy machine.
    sandbox_account("integration", modes="FAST,RELAX", concurrency=20, duration="2")
    caller = Caller(organization=organization, api_key=live_key.api_key)
    client = Client()

    # --- first wave: everything that needs no parent ------------------------------------------
    imagine = task_submit(caller=caller, action=Action.IMAGINE, prompt="a lighthouse --ar 3:2")
    assert imagine.result == SubmitOutcome.STARTED
    # Watched from now on: the submits below may take longer than the job on a busy machine.
    progress = ProgressWatcher(imagine.task.pk)
    describe = task_submit(
        caller=caller, action=Action.DESCRIBE, images=[png_data_url((20, 90, 200), (96, 64))]
    )
    blend2 = task_submit(
        caller=caller,
        action=Action.BLEND,
        images=[png_data_url((255, 0, 0)), png_data_url((0, 0, 255))],
        dimensions="LANDSCAPE",
    )
    blend5 = task_submit(
        caller=caller,
        action=Action.BLEND,
        images=[png_data_url((40 * i, 200 - 30 * i, 90)) for i in range(5)],
    )
    shorten = task_submit(
        caller=caller,
        action=Action.SHORTEN,
        prompt="a very detailed and intricate painting of an old red barn in a snowy field",
    )
    swap = task_submit(
        caller=caller,
        action=Action.SWAP_FACE,
        images=[png_data_url((250, 200, 150), (80, 80)), png_data_url((10, 60, 10), (160, 120))],
    )
    queued = task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat", mode=Mode.TURBO)
    assert queued.result == SubmitOutcome.QUEUED
    assert queued.queue_position == 1

    # CANCEL of a queued task: ends CANCEL, its hold released, nothing charged.
    held_before = balance_get(organization=organization).held
    cancelled = task_cancel(organization=organization, task_id=queued.task.pk)
    assert cancelled.status == Status.CANCEL
    assert cancelled.error_code == ErrorCode.CANCELLED
    assert balance_get(organization=organization).held == held_before - 28000
    assert list(
        LedgerEntry.objects.filter(task=cancelled).order_by("id").values_list("kind", flat=True)
    ) == [EntryKind.HOLD, EntryKind.RELEASE]

    # The IMAGINE reports increasing progress while it runs.
    seen = progress.join()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len([p for p in seen if 0 < p < 100]) >= 2, seen

    first = wait_terminal(t.task.pk for t in (imagine, describe, blend2, blend5, shorten, swap))
    grid = first[imagine.task.pk]
    assert_images(client, grid)
    assert fetch_image(client, grid.result["image"]).size == (1024, 682)  # follows --ar 3:2
    for outcome in (blend2, blend5):
        assert_images(client, first[outcome.task.pk])
    assert fetch_image(client, first[blend2.task.pk].result["image"]).width > (
        fetch_image(client, first[blend2.task.pk].result["image"]).height
    )
    assert_images(client, first[swap.task.pk])
    assert first[swap.task.pk].buttons == []
    described = first[describe.task.pk]
    assert described.status == Status.SUCCESS
    assert described.properties["finalPrompt"].startswith("1️⃣ ")
    assert len(described.properties["prompts"]) == 4
    shortened = first[shorten.task.pk]
    assert shortened.status == Status.SUCCESS
    assert len(shortened.properties["prompts"]) == 5

    # --- second wave: buttons of the grid, describe → imagine, shorten → imagine --------------
    u1 = task_press(caller=caller, parent_id=grid.pk, custom_id=button(grid, label="U1"))
    v2 = task_press(caller=caller, parent_id=grid.pk, custom_id=button(grid, label="V2"))
    reroll = task_press(
        caller=caller, parent_id=grid.pk, custom_id=button(grid, custom_id_part="reroll")
    )
    picked = task_press(
        caller=caller,
        parent_id=described.pk,
        custom_id=button(described, custom_id_part="PicReader::2"),
    )
    assert picked.result == SubmitOutcome.MODAL
    assert picked.task.prompt_en == described.properties["prompts"][1]
    from_describe = task_submit_modal(caller=caller, task_id=picked.task.pk)
    analyzed = task_press(
        caller=caller,
        parent_id=shortened.pk,
        custom_id=button(shortened, custom_id_part="PromptAnalyzer::3"),
    )
    assert analyzed.result == SubmitOutcome.MODAL
    from_shorten = task_submit_modal(
        caller=caller, task_id=analyzed.task.pk, prompt=f"{analyzed.task.prompt_en} --ar 2:3"
    )
    second = wait_terminal(t.task.pk for t in (u1, v2, reroll, from_describe, from_shorten))
    upscale = second[u1.task.pk]
    assert_images(client, upscale)
    assert upscale.result["is_grid"] is False
    for outcome in (v2, reroll, from_describe, from_shorten):
        assert_images(client, second[outcome.task.pk])
    assert second[from_describe.task.pk].action == Action.IMAGINE
    assert second[from_shorten.task.pk].action == Action.IMAGINE
    portrait = fetch_image(client, second[from_shorten.task.pk].result["image"])
    assert portrait.height > portrait.width

    # --- third wave: the buttons of the upscale, two of them MODAL ----------------------------
    zoom = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button(upscale, label="Zoom Out 2x")
    )
    pan = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button(upscale, custom_id_part="pan_left")
    )
    subtle = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button(upscale, label="Vary (Subtle)")
    )
    region = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button(upscale, label="Vary (Region)")
    )
    assert region.result == SubmitOutcome.MODAL
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    region_queued = task_submit_modal(
        caller=caller, task_id=region.task.pk, prompt="a red door", mask=mask_url
    )
    custom = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button(upscale, label="Custom Zoom")
    )
    assert custom.result == SubmitOutcome.MODAL
    custom_queued = task_submit_modal(
        caller=caller, task_id=custom.task.pk, prompt="a lighthouse --zoom 1.5"
    )
    third = wait_terminal(t.task.pk for t in (zoom, pan, subtle, region_queued, custom_queued))
    for task in third.values():
        assert_images(client, task)
    assert third[custom_queued.task.pk].params["zoom_factor"] == 1.5
    assert third[region_queued.task.pk].params["mask"].startswith("inputs/")
    panned = fetch_image(client, third[pan.task.pk].result["image"])
    assert panned.width > panned.height  # the canvas grew sideways

    # --- money and upstream bookkeeping --------------------------------------------------------
    succeeded = Task.objects.filter(organization=organization, status=Status.SUCCESS)
    assert succeeded.count() == 16
    for task in succeeded:
        kinds = list(
            LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True)
        )
        assert kinds == [EntryKind.HOLD, EntryKind.CAPTURE], (task.action, kinds)
        assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1
    charged = sum(task.price for task in succeeded)
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (2_000_000 - charged, 0)
