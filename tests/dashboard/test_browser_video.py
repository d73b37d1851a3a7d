"""Video in the dashboard, in a real browser: the price tile, a start frame made into clips,
the players with their poster and a download with a meaningful name."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageDraw

from apps.billing.selectors import price_get
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import VIDEO_HD, Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME, sandbox_pool_ensure
from tests.tasks.helpers import run_to_completion

from .browser import fits, sign_in
from .seed import seed_tenant

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def frame() -> bytes:
    image = Image.new("RGB", (96, 64), (20, 40, 90))
    ImageDraw.Draw(image).ellipse((30, 10, 66, 54), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_start_frame_becomes_playable_downloadable_clips(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    # The seeded upscale's card offers Midjourney's Animate buttons, in their own group.
    animate = page.get_by_role("group", name="Video").first
    expect(animate.get_by_role("button", name="Animate (High motion)")).to_be_visible()
    expect(animate.get_by_role("button", name="Animate (Low motion)")).to_be_visible()
    page.get_by_role("radio", name="Video").check()
    video_price = price_get(action=Action.VIDEO, mode=Mode.FAST)
    expect(page.locator("[data-price-for=FAST]")).to_have_text(f"{video_price:,} tokens")
    # HD is priced on its own row: the tiles follow the resolution select, and back.
    hd_price = price_get(action=VIDEO_HD, mode=Mode.FAST)
    assert hd_price != video_price
    page.select_option("#id_resolution", "720p")
    expect(page.locator("[data-price-for=FAST]")).to_have_text(f"{hd_price:,} tokens")
    page.select_option("#id_resolution", "480p")
    expect(page.locator("[data-price-for=FAST]")).to_have_text(f"{video_price:,} tokens")
    expect(page.locator("[data-images-hint]")).to_contain_text("start frame")
    page.fill("#id_prompt", "the moon rises")
    page.locator("#id_images").set_input_files(
        files=[{"name": "frame.png", "mimeType": "image/png", "buffer": frame()}]
    )
    page.get_by_label("Test mode").check()
    # Test tasks run on the sandbox pool: make its jobs finish at once.
    sandbox_pool_ensure()
    UpstreamAccount.objects.filter(name=SANDBOX_POOL_NAME).update(options={"duration": 0})
    page.get_by_role("button", name="Generate").click()
    card = page.locator("#task-feed article.task-card").first
    expect(card.locator(".badge.warn")).to_have_text("Test")
    task = Task.objects.get(organization=tenant.organization, action=Action.VIDEO)
    assert run_to_completion(task.pk).status == Status.SUCCESS
    # The card polls until the task is done, then shows the four clips with their poster.
    players = page.locator(f"#task-{task.pk}").get_by_test_id("task-video")
    expect(players).to_have_count(4)
    assert (players.first.get_attribute("poster") or "").endswith(".png")
    assert (players.first.get_attribute("src") or "").endswith(".mp4")
    fits(page, "i17-create-video")
    with page.expect_download() as clip:
        page.locator(f"#task-{task.pk}").get_by_test_id("download-video").nth(1).click()
    assert clip.value.suggested_filename == f"mjgate-{task.pk}-the-moon-rises-video-2.mp4"
