"""Tasks run end to end on the mjproxy engine against the local fake upstream (in-process)."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.storage import file_url, read_file

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db

FUNDS = 1_000_000


def _caller(organization, live_key) -> Caller:
    return Caller(organization=organization, api_key=live_key.api_key)


def _kinds(task: Task) -> list[str]:
    return list(LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True))


def _button(task: Task, label: str) -> str:
    return next(b["custom_id"] for b in task.buttons if b["label"] == label)


def _imagine(organization, live_key, fake, prompt: str = "a red fox --ar 3:2", **kw) -> Task:
    outcome = task_submit(
        caller=_caller(organization, live_key), action=Action.IMAGINE, prompt=prompt, **kw
    )
    task = start(outcome.task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


def _finish(fake, task: Task) -> Task:
    fake.finish(task.upstream_job_id)
    done = poll(task.pk)
    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    return done


def test_imagine_succeeds_through_the_upstream_with_images_in_our_storage(funded, live_key, fake):
    account = mjproxy_account(fake)
    reference = png_bytes((200, 10, 10))
    task = _imagine(funded, live_key, fake, images=[data_url(reference)])

    (submitted,) = fake.submits()
    assert submitted.path == "/mj/submit/imagine"
    assert submitted.headers["mj-api-secret"] == "upstream-secret"
    assert submitted.body["prompt"] == "a red fox --ar 3:2"
    assert submitted.body["state"] == f"mjgate:{task.pk}"
    assert submitted.body["mode"] == "FAST"
    assert "notifyHook" not in submitted.body  # callbacks are off for this account
    (sent,) = submitted.body["base64Array"]
    assert sent.startswith("data:image/png;base64,")
    assert base64.b64decode(sent.split(",", 1)[1]) == reference
    job_id = fake.job_for_state(f"mjgate:{task.pk}").id
    assert task.upstream_job_id == job_id
    assert task.upstream_account_id == account.pk
    assert task.engine_state == {"account": account.pk}

    fake.set_progress(job_id, 40)
    assert poll(task.pk).progress == 40

    done = _finish(fake, task)
    served = fake.served_images[job_id]
    assert read_file(done.result["image"]) == served
    assert done.result["is_grid"] is True
    assert len(done.result["splits"]) == 4
    url = file_url(done.result["image"])
    assert url == f"http://testserver/files/{done.result['image']}"
    response = Client().get(f"/files/{done.result['image']}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == served
    # Our buttons carry our job hash; the upstream's are kept aside for translating presses.
    assert [b["label"] for b in done.buttons][:4] == ["U1", "U2", "U3", "U4"]
    their_u1 = fake.jobs[job_id].buttons[0]["customId"]
    assert _button(done, "U1") != their_u1
    assert done.engine_state["buttons"] == fake.jobs[job_id].buttons
    # Nothing public mentions the upstream's address or ids.
    public = json.dumps([done.result, done.buttons, done.properties, done.description])
    assert fake.base_url not in public
    assert job_id not in public
    assert "fake-instance" not in public
    assert done.properties["finalPrompt"] == "a red fox --ar 3:2"
    balance = balance_get(organization=funded)
    assert (balance.available, balance.held) == (FUNDS - 14000, 0)
    assert _kinds(done) == [EntryKind.HOLD, EntryKind.CAPTURE]
    account.refresh_from_db()
    assert (account.total_submitted, account.total_succeeded) == (1, 1)


def test_u1_and_vary_region_reach_the_upstream_with_its_ids_prompt_and_mask(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    grid = _finish(fake, _imagine(funded, live_key, fake, prompt="a red fox"))
    grid_job = fake.jobs[grid.upstream_job_id]

    u1 = task_press(caller=caller, parent_id=grid.pk, custom_id=_button(grid, "U1"))
    upscale = start(u1.task.pk)
    action = fake.submits("/mj/submit/action")[-1]
    assert action.body["taskId"] == grid_job.id
    assert action.body["customId"] == f"MJ::JOB::upsample::1::{grid_job.job_hash}"
    assert action.body["state"] == f"mjgate:{upscale.pk}"
    upscale = _finish(fake, upscale)
    assert upscale.action == Action.UPSCALE
    assert upscale.result["is_grid"] is False
    assert upscale.result["splits"] == []
    upscale_job = fake.jobs[upscale.upstream_job_id]

    region = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=_button(upscale, "Vary (Region)")
    )
    assert region.result == "modal"
    assert fake.submits("/mj/submit/action")[-1] is action  # nothing sent before step two
    mask = png_bytes((255, 255, 255), size=32)
    task_submit_modal(
        caller=caller, task_id=region.task.pk, prompt="a red fox wearing a hat", mask=data_url(mask)
    )
    inpaint = start(region.task.pk)
    first = fake.submits("/mj/submit/action")[-1]
    assert first.body["taskId"] == upscale_job.id
    assert first.body["customId"] == f"MJ::Inpaint::1::{upscale_job.job_hash}::SOLO"
    (modal,) = fake.requests_to("/mj/submit/modal")
    modal_job = fake.job_for_state(f"mjgate:{inpaint.pk}")
    assert modal.body["taskId"] == modal_job.id
    assert modal.body["prompt"] == "a red fox wearing a hat"
    assert base64.b64decode(modal.body["maskBase64"].split(",", 1)[1]) == mask
    assert modal_job.mask == modal.body["maskBase64"]
    assert inpaint.upstream_job_id == modal_job.id
    inpaint = _finish(fake, inpaint)
    assert inpaint.action == Action.VARIATION
    assert inpaint.result["is_grid"] is True
    assert balance_get(organization=funded).available == FUNDS - 14000 - 3500 - 14000


def test_upscale_subtle_maps_to_the_upstreams_model_version(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    grid = _finish(fake, _imagine(funded, live_key, fake, prompt="a bay"))
    upscale = _finish(
        fake,
        start(task_press(caller=caller, parent_id=grid.pk, custom_id=_button(grid, "U2")).task.pk),
    )
    ours = _button(upscale, "Upscale (Subtle)")
    assert "upsample_v6_2x_subtle" in ours
    subtle = start(task_press(caller=caller, parent_id=upscale.pk, custom_id=ours).task.pk)
    job_hash = fake.jobs[upscale.upstream_job_id].job_hash
    assert fake.submits("/mj/submit/action")[-1].body["customId"] == (
        f"MJ::JOB::upsample_v6r1_2x_subtle::1::{job_hash}::SOLO"
    )
    assert subtle.status == Status.IN_PROGRESS


@pytest.mark.parametrize(
    ("reason", "code", "shown"),
    [
        (
            "Banned prompt detected: blood",
            ErrorCode.BANNED_PROMPT,
            "The upstream rejected the prompt as banned: Banned prompt detected: blood",
        ),
        (
            "Midjourney had an internal error",
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream failed the job: Midjourney had an internal error",
        ),
    ],
)
def test_upstream_failure_fails_our_task_and_releases_the_hold(
    funded, live_key, fake, reason, code, shown
):
    account = mjproxy_account(fake)
    task = _imagine(funded, live_key, fake)
    assert balance_get(organization=funded).held == 14000
    fake.fail(task.upstream_job_id, reason)
    failed = poll(task.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == code
    assert failed.fail_reason == shown
    assert failed.result == {}
    balance = balance_get(organization=funded)
    assert (balance.available, balance.held) == (FUNDS, 0)
    assert _kinds(failed) == [EntryKind.HOLD, EntryKind.RELEASE]
    account.refresh_from_db()
    assert account.total_failed == 1


@pytest.mark.parametrize(
    ("code", "description", "error_code", "reason"),
    [
        (
            24,
            "banned prompt",
            ErrorCode.BANNED_PROMPT,
            "The upstream rejected the prompt as banned: banned prompt",
        ),
        (
            4,
            "prompt too long",
            ErrorCode.INVALID_PARAMETER,
            "The upstream rejected the request as invalid: prompt too long",
        ),
        (
            9,
            "no account instance",
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream rejected the request (code 9): no account instance",
        ),
    ],
)
def test_permanent_submit_codes_fail_the_task_with_the_upstreams_reason(
    funded, live_key, fake, code, description, error_code, reason
):
    account = mjproxy_account(fake)
    fake.scripted.append((code, description))
    outcome = task_submit(
        caller=_caller(funded, live_key), action=Action.IMAGINE, prompt="a quiet lake"
    )
    task = start(outcome.task.pk)
    assert task.status == Status.FAILURE
    assert (task.error_code, task.fail_reason) == (error_code, reason)
    assert task.upstream_job_id == ""
    assert balance_get(organization=funded).held == 0
    assert _kinds(task) == [EntryKind.HOLD, EntryKind.RELEASE]
    account.refresh_from_db()
    # The upstream answered: a rejected prompt says nothing about the account's health.
    assert account.consecutive_failures == 0


def test_banned_word_reported_by_the_upstream_is_named(funded, live_key, fake):
    mjproxy_account(fake)
    fake.banned_words.add("gore")
    outcome = task_submit(
        caller=_caller(funded, live_key), action=Action.IMAGINE, prompt="some gore here"
    )
    task = start(outcome.task.pk)
    assert task.status == Status.FAILURE
    assert task.error_code == ErrorCode.BANNED_PROMPT
    assert task.fail_reason == "The upstream rejected the prompt as banned ('gore'): banned prompt"


def test_describe_blend_shorten_and_face_swap_use_their_endpoints(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    one, two = png_bytes((1, 2, 3)), png_bytes((4, 5, 6))

    describe = start(
        task_submit(caller=caller, action=Action.DESCRIBE, images=[data_url(one)]).task.pk
    )
    request = fake.submits("/mj/submit/describe")[-1]
    assert base64.b64decode(request.body["base64"].split(",", 1)[1]) == one
    described = _finish(fake, describe)
    assert described.properties["prompts"] == [f"described scene {n}" for n in range(1, 5)]
    assert described.properties["finalPrompt"].startswith("1️⃣ described scene 1")
    assert read_file(described.result["image"]) == one  # our own copy of the input

    blend = start(
        task_submit(
            caller=caller,
            action=Action.BLEND,
            images=[data_url(one), data_url(two)],
            dimensions="portrait",
        ).task.pk
    )
    request = fake.submits("/mj/submit/blend")[-1]
    assert request.body["dimensions"] == "PORTRAIT"
    assert [base64.b64decode(i.split(",", 1)[1]) for i in request.body["base64Array"]] == [one, two]
    assert _finish(fake, blend).result["is_grid"] is True

    shorten = start(
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a very long prompt").task.pk
    )
    assert fake.submits("/mj/submit/shorten")[-1].body["prompt"] == "a very long prompt"
    shortened = _finish(fake, shorten)
    assert shortened.result == {}
    assert shortened.properties["analysis"] == "Analysis: the words that matter."
    assert shortened.properties["prompts"] == [f"a very long prompt short {n}" for n in range(1, 6)]

    swap = start(
        task_submit(
            caller=caller, action=Action.SWAP_FACE, images=[data_url(one), data_url(two)]
        ).task.pk
    )
    request = fake.submits("/mj/insight-face/swap")[-1]
    assert base64.b64decode(request.body["sourceBase64"].split(",", 1)[1]) == one
    assert base64.b64decode(request.body["targetBase64"].split(",", 1)[1]) == two
    swapped = _finish(fake, swap)
    assert swapped.result["is_grid"] is False
    assert default_storage.exists(swapped.result["image"])


def test_upstream_without_batch_endpoint_is_polled_per_task(funded, live_key, fake):
    mjproxy_account(fake)
    fake.supports_batch = False
    task = _imagine(funded, live_key, fake)
    fake.set_progress(task.upstream_job_id, 70)
    assert poll(task.pk).progress == 70
    assert fake.requests_to(f"/mj/task/{task.upstream_job_id}/fetch")
    _finish(fake, task)


def test_a_job_the_upstream_does_not_list_keeps_running_until_it_appears(funded, live_key, fake):
    mjproxy_account(fake)
    task = _imagine(funded, live_key, fake)
    fake.set_progress(task.upstream_job_id, 30)
    assert poll(task.pk).progress == 30
    hidden = fake.jobs.pop(task.upstream_job_id)
    again = poll(task.pk)
    assert (again.status, again.progress) == (Status.IN_PROGRESS, 30)
    fake.jobs[hidden.id] = hidden
    _finish(fake, task)


def test_cancel_reaches_the_upstream(funded, live_key, fake):
    from apps.tasks.services.cancel import task_cancel

    mjproxy_account(fake)
    task = _imagine(funded, live_key, fake)
    task_cancel(organization=funded, task_id=task.pk)
    assert fake.requests_to(f"/mj/task/{task.upstream_job_id}/cancel")
    assert fake.jobs[task.upstream_job_id].status == "CANCEL"
    assert Task.objects.get(pk=task.pk).status == Status.CANCEL
    assert balance_get(organization=funded).held == 0


def test_secret_is_encrypted_and_options_are_validated(db, fake):
    from django.db import connection

    from apps.core.errors import ValidationFailed

    account = mjproxy_account(fake)
    assert account.options == {"base_url": fake.base_url}
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM engines_upstreamaccount WHERE id = %s", [account.pk])
        (raw,) = cursor.fetchone()
    assert "upstream-secret" not in raw
    assert UpstreamAccount.objects.get(pk=account.pk).secrets == {"secret": "upstream-secret"}

    with pytest.raises(ValidationFailed, match="mjproxy needs base_url"):
        mjproxy_account(None, "no-url", base_url="")
    with pytest.raises(ValidationFailed, match="Unknown mjproxy option 'duration'"):
        mjproxy_account(fake, "bad-option", duration="3")
    with pytest.raises(ValidationFailed, match="base_url: Only http and https"):
        mjproxy_account(None, "bad-url", base_url="ftp://10.0.0.5/")
    assert UpstreamAccount.objects.filter(engine="mjproxy").count() == 1


def test_relative_image_urls_are_the_upstreams_own(funded, live_key, fake):
    mjproxy_account(fake)
    fake.image_base = ""
    task = _imagine(funded, live_key, fake)
    done = _finish(fake, task)
    assert read_file(done.result["image"]) == fake.served_images[task.upstream_job_id]


def test_images_on_another_host_go_through_the_ssrf_guard(funded, live_key, fake, settings):
    """Only the account's own base_url origin is trusted; anything else is a URL the upstream
    chose, refused when it points at a private or loopback address."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    mjproxy_account(fake)
    fake.image_base = f"http://localhost:{fake.port}"  # same machine, another origin
    task = _imagine(funded, live_key, fake)
    fake.finish(task.upstream_job_id)
    failed = poll(task.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == ErrorCode.UPSTREAM_ERROR
    assert failed.fail_reason == (
        "The upstream's result image could not be fetched: URLs may not point at localhost."
    )
    assert fake.served_images == {}
    assert balance_get(organization=funded).held == 0


def test_private_cdn_images_are_fetched_when_the_operator_allows_private_addresses(
    funded, live_key, fake, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    mjproxy_account(fake)
    fake.image_base = f"http://localhost:{fake.port}"
    task = _imagine(funded, live_key, fake)
    done = _finish(fake, task)
    assert read_file(done.result["image"]) == fake.served_images[task.upstream_job_id]


def test_createupstream_makes_an_mjproxy_account(db, fake):
    from io import StringIO

    from django.core.management import call_command

    call_command(
        "createupstream",
        "--engine=mjproxy",
        "--name=mj-cli",
        "--modes=FAST,RELAX",
        "--concurrency=4",
        f"--option=base_url={fake.base_url}",
        "--option=secret=cli-secret",
        "--option=callbacks=true",
        stdout=StringIO(),
    )
    account = UpstreamAccount.objects.get(name="mj-cli")
    assert (account.engine, account.modes, account.concurrency) == ("mjproxy", ["FAST", "RELAX"], 4)
    assert account.options == {"base_url": fake.base_url, "callbacks": True}
    assert account.secrets == {"secret": "cli-secret"}
