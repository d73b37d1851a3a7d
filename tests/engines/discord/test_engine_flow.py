"""Every action through the fake Discord: submit, the gateway's news, poll, follow-ups."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image

from apps.engines.base import PermanentEngineError, TemporaryEngineError
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, GatewayLease, Phase
from apps.engines.discord.rest import DiscordRest

from .conftest import GatewayThread, job_for, parent_of, poll_until_done, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _png(colour: tuple[int, int, int] = (10, 200, 30), size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(data: bytes | None) -> Image.Image:
    assert data is not None
    return Image.open(io.BytesIO(data))


@pytest.fixture
def connected(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> tuple[Any, str, GatewayThread]:
    account, token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)
    return account, token, thread


def _finished(engine: DiscordEngine, job: Any) -> Any:
    submitted = engine.submit(job)
    running = replace(job, upstream_job_id=submitted.upstream_job_id, state=submitted.state)
    result = poll_until_done(engine, running)
    assert result.status == "success", result.fail_reason
    return running, result


@pytest.mark.slow
def test_imagine_then_every_kind_of_button(
    engine: DiscordEngine,
    connected: tuple[Any, str, GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _token, thread = connected
    before = fake_discord.stats()
    imagine = job_for(account, prompt="a red fox in snow --ar 1:1")
    imagine, grid = _finished(engine, imagine)

    assert grid.is_grid is True
    assert _image(grid.image.data).size == (256, 256)
    custom_ids = [button["custom_id"] for button in grid.state["buttons"]]
    assert len(custom_ids) == 9
    assert custom_ids[0].startswith("MJ::JOB::upsample::1::")
    assert any(c.startswith("MJ::JOB::reroll::0::") and c.endswith("::SOLO") for c in custom_ids)
    row = DiscordJob.objects.get(pk=imagine.upstream_job_id)
    assert row.phase == Phase.SUCCESS and row.progress == 100

    # The gateway pushed progress and the result (image bytes included) to the sink.
    def pushed_until_success() -> list[Any]:
        mine = [u for u in thread.updates if u.upstream_job_id == imagine.upstream_job_id]
        return mine if mine and mine[-1].result.status == "success" else []

    # The row is written before the gateway downloads the image and pushes the update.
    pushed = wait_for(pushed_until_success)
    assert any(0 < u.result.progress < 100 for u in pushed)
    assert pushed[-1].result.image is not None and pushed[-1].result.image.data == grid.image.data
    assert pushed[-1].task_id == imagine.task_id

    # U2 on the grid, pressed with *our* button id format (another hash): translated to theirs.
    ours = "MJ::JOB::upsample::2::0123456789abcdef0123456789abcdef"
    upscale, single = _finished(
        engine,
        job_for(account, action="UPSCALE", custom_id=ours, parent=parent_of(imagine, grid.state)),
    )
    assert single.is_grid is False
    assert _image(single.image.data).size == (256, 256)
    upscale_buttons = [button["custom_id"] for button in single.state["buttons"]]
    assert any(c.startswith("MJ::Outpaint::50::1::") for c in upscale_buttons)
    assert any(c.startswith("MJ::CustomZoom::") for c in upscale_buttons)

    # A grid-making button (V1), a pan and a zoom out on the upscale.
    for action, prefix in (
        ("VARIATION", "MJ::JOB::variation::1::"),
        ("PAN", "MJ::JOB::pan_left::1::"),
        ("ZOOM", "MJ::Outpaint::75::1::"),
        ("VARIATION", "MJ::JOB::high_variation::1::"),
    ):
        source = grid if prefix.startswith("MJ::JOB::variation") else single
        parent_job = imagine if source is grid else upscale
        pressed = next(
            c for c in [b["custom_id"] for b in source.state["buttons"]] if c.startswith(prefix)
        )
        _job, result = _finished(
            engine,
            job_for(
                account,
                action=action,
                custom_id=pressed,
                parent=parent_of(parent_job, source.state),
            ),
        )
        assert result.is_grid is True, prefix

    # Custom zoom opens a modal; the engine answers it with the task's prompt.
    zoom_button = next(c for c in upscale_buttons if c.startswith("MJ::CustomZoom::"))
    zoom_job, zoomed = _finished(
        engine,
        job_for(
            account,
            action="ZOOM",
            prompt="a red fox in snow --zoom 1.8",
            custom_id=zoom_button,
            parent=parent_of(upscale, single.state),
        ),
    )
    zoom_row = DiscordJob.objects.get(pk=zoom_job.upstream_job_id)
    assert zoom_row.modal["custom_id"].startswith("MJ::OutpaintCustomZoomModal::")
    assert zoom_row.second_nonce and zoom_row.bot_prompt.startswith("a red fox in snow --zoom 1.8")
    assert zoomed.is_grid is True

    # Vary (Region): the editor's API gets the mask.
    region_button = next(c for c in upscale_buttons if c.startswith("MJ::Inpaint::"))
    _job, region = _finished(
        engine,
        job_for(
            account,
            action="VARIATION",
            prompt="a blue fox",
            custom_id=region_button,
            parent=parent_of(upscale, single.state),
            mask=_png((255, 255, 255)),
        ),
    )
    assert region.is_grid is True

    after = fake_discord.stats()
    assert after["duplicate_nonces"] == before.get("duplicate_nonces", 0) == 0
    assert after["inpaint_submits"] >= 1


@pytest.mark.slow
def test_describe_shorten_blend_and_imagine_with_reference_images(
    engine: DiscordEngine,
    connected: tuple[Any, str, GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _token, _thread = connected
    uploads_before = fake_discord.stats().get("uploads", 0)

    _job, described = _finished(
        engine, job_for(account, action="DESCRIBE", prompt="", images=(_png(),))
    )
    assert described.image is None
    prompts = described.properties["finalPrompt"]
    assert prompts.count("a described picture number") == 4 and prompts.startswith("1️⃣")
    assert [b["custom_id"] for b in described.state["buttons"]][:4] == [
        f"MJ::Job::PicReader::{n}" for n in range(1, 5)
    ]

    shorten_job, shortened = _finished(
        engine, job_for(account, action="SHORTEN", prompt="a very long detailed prompt of a cat")
    )
    assert "**SHORTENED OPTIONS**" in shortened.properties["finalPrompt"]
    # The describe/shorten pick (1️⃣ …) is a modal: imagine with the chosen prompt.
    _job, picked = _finished(
        engine,
        job_for(
            account,
            action="IMAGINE",
            prompt="a very long detailed",
            custom_id="MJ::Job::PromptAnalyzer::2",
            parent=parent_of(shorten_job, shortened.state),
        ),
    )
    assert picked.is_grid is True

    _job, blended = _finished(
        engine,
        job_for(
            account,
            action="BLEND",
            prompt="",
            images=(_png((1, 2, 3)), _png((200, 2, 3))),
            params={"dimensions": "PORTRAIT"},
        ),
    )
    assert blended.is_grid is True

    imagine_job, with_refs = _finished(
        engine, job_for(account, prompt="a castle", images=(_png(),))
    )
    assert with_refs.is_grid is True
    row = DiscordJob.objects.get(pk=imagine_job.upstream_job_id)
    assert row.prompt.startswith(f"{fake_discord.url}/attachments/") and row.prompt.endswith(
        "a castle --fast"
    )
    assert fake_discord.stats()["uploads"] - uploads_before == 1 + 2 + 1
    assert fake_discord.stats()["duplicate_nonces"] == 0


def test_seed_comes_from_the_envelope_reaction(
    engine: DiscordEngine, connected: tuple[Any, str, GatewayThread]
) -> None:
    account, _token, _thread = connected
    imagine, _grid = _finished(engine, job_for(account, prompt="a lighthouse"))
    seed = engine.image_seed(imagine)
    assert isinstance(seed, int) and 0 <= seed <= 4_294_967_295
    assert engine.image_seed(imagine) == seed  # remembered: no second reaction needed
    assert DiscordJob.objects.get(pk=imagine.upstream_job_id).seed == seed


def test_submit_is_idempotent_per_task_and_the_gateway_records_its_session(
    engine: DiscordEngine,
    connected: tuple[Any, str, GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token, _thread = connected
    job = job_for(account, prompt="one job only")
    first = engine.submit(job)
    second = engine.submit(job)
    assert second.upstream_job_id == first.upstream_job_id
    assert DiscordJob.objects.filter(task_id=job.task_id).count() == 1
    assert fake_discord.stats()["duplicate_nonces"] == 0
    lease = GatewayLease.objects.get(account_id=account.pk)
    assert lease.holder and lease.user_id
    assert fake_discord.stats()["live_sessions"][token]


def test_niji_jobs_go_to_the_niji_bot_in_its_own_channel(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    fake_discord: FakeDiscordThread,
) -> None:
    niji_channel = "799999999999990001"
    account, token = make_account(bots="MID_JOURNEY,NIJI_JOURNEY", niji_channel_id=niji_channel)
    fake_discord.add_user(token, channel_ids=[account.options["channel_id"], niji_channel])
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    job, result = _finished(
        engine, replace(job_for(account, prompt="an anime fox"), bot="NIJI_JOURNEY")
    )
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    assert (row.bot_id, row.channel_id) == ("1022952195194359889", niji_channel)
    assert result.is_grid is True

    midjourney_only, _token = make_account()
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(replace(job_for(midjourney_only), bot="NIJI_JOURNEY"))
    assert caught.value.error_code == "ACCOUNT_UNAVAILABLE"
    assert not DiscordJob.objects.filter(account=midjourney_only).exists()


def test_remix_mode_answers_the_remix_form_with_the_tasks_prompt(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
) -> None:
    account, _token = make_account(fake_user={"remix": True})
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    imagine, grid = _finished(engine, job_for(account, prompt="a green valley"))
    pressed = next(
        b["custom_id"]
        for b in grid.state["buttons"]
        if b["custom_id"].startswith("MJ::JOB::variation::3::")
    )
    variation, varied = _finished(
        engine,
        job_for(
            account,
            action="VARIATION",
            prompt="a green valley at dusk",
            custom_id=pressed,
            parent=parent_of(imagine, grid.state),
        ),
    )
    row = DiscordJob.objects.get(pk=variation.upstream_job_id)
    assert row.modal["custom_id"].startswith("MJ::RemixModal::")
    assert row.bot_prompt.startswith("a green valley at dusk\nVariations (Strong)")
    assert varied.is_grid is True


def test_a_region_edit_whose_editor_call_was_not_made_is_answered_again(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_answer_modal`` claims the modal (MODAL → MODAL_SENT) and then calls the editor's API;
    a TemporaryEngineError there (the account's REST turn busy, a long rate limit: nothing was
    sent) fails the submit and the lifecycle requeues the task on its parent's account, whose
    retry adopts the row. The row goes back to MODAL, so the retry's poll answers the form and
    the edit finishes; left MODAL_SENT, nothing ever answered it and the task ran until its
    timeout."""
    account, _token = make_account()
    thread = gateway(account_ids={account.pk})
    thread.wait_connected(account.pk)

    def finished(job: Any) -> Any:
        submitted = engine.submit(job)
        running = replace(job, upstream_job_id=submitted.upstream_job_id, state=submitted.state)
        result = poll_until_done(engine, running)
        assert result.status == "success", result.fail_reason
        return running, result

    imagine, grid = finished(job_for(account, prompt="a fox at dusk"))
    ours = "MJ::JOB::upsample::1::0123456789abcdef0123456789abcdef"
    upscale, single = finished(
        job_for(account, action="UPSCALE", custom_id=ours, parent=parent_of(imagine, grid.state))
    )
    region_button = next(
        b["custom_id"]
        for b in single.state["buttons"]
        if b["custom_id"].startswith("MJ::Inpaint::")
    )
    region = job_for(
        account, action="VARIATION", prompt="a blue fox", custom_id=region_button,
        parent=parent_of(upscale, single.state), mask=_png((255, 255, 255)),
    )  # fmt: skip
    original = DiscordRest.request

    def request(self: DiscordRest, method: str, url: str, **kwargs: Any) -> Any:
        if kwargs.get("route") == "POST inpaint":
            raise TemporaryEngineError("This Discord account is busy with other calls.")
        return original(self, method, url, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(DiscordRest, "request", request)
        with pytest.raises(TemporaryEngineError):
            engine.submit(region)  # the lifecycle requeues the task on this
    (row,) = DiscordJob.objects.filter(task_id=region.task_id)
    assert row.phase == Phase.MODAL  # to be answered again
    again = engine.submit(region)  # the requeued task, back on its parent's account
    assert again.upstream_job_id == row.nonce  # the same job, its form still to answer
    running = replace(region, upstream_job_id=again.upstream_job_id, state=again.state)
    result = poll_until_done(engine, running)
    assert result.status == "success", result.fail_reason
