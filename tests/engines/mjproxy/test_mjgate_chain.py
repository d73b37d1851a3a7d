"""mjgate speaks the mj-proxy dialect, so one mjgate can be the upstream of another.

Here the "second instance" is this same code base served by ``live_server``: a tenant of it
(with a test key, so its work runs on the built-in sandbox pool) is the upstream account of a
customer of the first. Every hop is real HTTP through the mj-proxy dialect.
"""

from __future__ import annotations

import base64

import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import TERMINAL_STATUSES, Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.storage import read_file

from .helpers import data_url, mjproxy_account, png_bytes, poll, start, step

FUNDS = 1_000_000


def _upstream_task(organization, *, after: set[str]) -> Task:
    (task,) = Task.objects.filter(organization=organization).exclude(pk__in=after)
    return task


def _run(task_id: str) -> Task:
    for _ in range(20):
        if step(task_id) in TERMINAL_STATUSES:
            break
    return Task.objects.get(pk=task_id)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_mjgate_serves_imagine_u1_and_vary_region(
    live_server, settings, organization, other_organization, make_key, fund
):
    settings.PUBLIC_BASE_URL = live_server.url  # the upstream's image URLs point at itself
    UpstreamAccount.objects.create(
        name=SANDBOX_POOL_NAME,
        engine="sandbox",
        modes=["FAST", "RELAX", "TURBO"],
        concurrency=10,
        is_sandbox_pool=True,
        options={"duration": 0},
    )
    upstream_key = make_key(other_organization, is_test=True)
    fund(organization, FUNDS)
    customer = Caller(organization=organization, api_key=make_key(organization).api_key)
    account = mjproxy_account(
        None, "mjgate-upstream", base_url=live_server.url, secret=upstream_key.plaintext
    )
    seen: set[str] = set()

    # Imagine: our task → the upstream's mj-proxy API → its sandbox → back to our storage.
    ours = start(task_submit(caller=customer, action=Action.IMAGINE, prompt="a paper boat").task.pk)
    assert ours.upstream_account_id == account.pk
    theirs = _upstream_task(other_organization, after=seen)
    seen.add(theirs.pk)
    assert ours.upstream_job_id == theirs.pk
    assert (theirs.prompt, theirs.is_test, theirs.state) == (
        "a paper boat",
        True,
        f"mjgate:{ours.pk}",
    )
    theirs = _run(theirs.pk)
    assert theirs.status == Status.SUCCESS
    grid = poll(ours.pk)
    assert grid.status == Status.SUCCESS
    assert read_file(grid.result["image"]) == read_file(theirs.result["image"])
    assert grid.result["image"] != theirs.result["image"]  # our own copy
    assert len(grid.result["splits"]) == 4

    # U1: our button → the upstream's button on its own task.
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    upscale = start(task_press(caller=customer, parent_id=grid.pk, custom_id=u1).task.pk)
    their_upscale = _upstream_task(other_organization, after=seen)
    seen.add(their_upscale.pk)
    assert their_upscale.parent_id == theirs.pk
    assert their_upscale.custom_id == next(
        b["custom_id"] for b in theirs.buttons if b["label"] == "U1"
    )
    assert their_upscale.custom_id != u1
    assert _run(their_upscale.pk).status == Status.SUCCESS
    upscale = poll(upscale.pk)
    assert upscale.status == Status.SUCCESS
    assert upscale.action == Action.UPSCALE

    # Vary (Region): two steps on both sides, with our prompt and mask arriving upstream.
    region = next(b["custom_id"] for b in upscale.buttons if b["label"] == "Vary (Region)")
    modal = task_press(caller=customer, parent_id=upscale.pk, custom_id=region).task
    mask = png_bytes((255, 255, 255), size=40)
    task_submit_modal(
        caller=customer, task_id=modal.pk, prompt="a paper boat at night", mask=data_url(mask)
    )
    inpaint = start(modal.pk)
    their_inpaint = _upstream_task(other_organization, after=seen)
    assert their_inpaint.parent_id == their_upscale.pk
    assert their_inpaint.prompt_en == "a paper boat at night"
    assert read_file(their_inpaint.params["mask"]) == mask
    assert inpaint.upstream_job_id == their_inpaint.pk
    assert _run(their_inpaint.pk).status == Status.SUCCESS
    inpaint = poll(inpaint.pk)
    assert inpaint.status == Status.SUCCESS
    assert inpaint.action == Action.VARIATION

    # The customer paid the first mjgate; the upstream tenant's test key paid nothing.
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (FUNDS - 14000 - 3500 - 14000, 0)
    assert LedgerEntry.objects.filter(organization=other_organization).count() == 0
    assert set(
        LedgerEntry.objects.filter(organization=organization, task__isnull=False).values_list(
            "kind", flat=True
        )
    ) == {EntryKind.HOLD, EntryKind.CAPTURE}
    assert base64.b64encode(mask)  # the mask travelled as a data URL
