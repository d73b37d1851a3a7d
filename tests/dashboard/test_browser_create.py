"""Issue 16, the Create page in a real browser: prices of the chosen action, face swap pickers,
icons for emoji buttons, downloads, a new card brought into view, the second step's cancel and
its refused value kept."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from apps.billing.selectors import price_get
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.storage import read_file

from .browser import fits, sign_in
from .conftest import PHONE
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def png(size: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mode_tiles_show_the_chosen_actions_price_and_free_in_test_mode(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    fast = page.locator("[data-price-for=FAST]")
    imagine = price_get(action=Action.IMAGINE, mode=Mode.FAST)
    describe = price_get(action=Action.DESCRIBE, mode=Mode.FAST)
    assert imagine != describe  # else the test could not tell them apart
    expect(fast).to_have_text(f"{imagine:,} tokens")
    page.get_by_label("Describe").check()
    expect(fast).to_have_text(f"{describe:,} tokens")
    page.get_by_label("Test mode").check()
    expect(fast).to_have_text("free")
    expect(page.locator("[data-price-for=RELAX]")).to_have_text("free")
    page.get_by_label("Test mode").uncheck()
    expect(fast).to_have_text(f"{describe:,} tokens")


def test_face_swap_has_a_labelled_picker_for_the_face_and_one_for_the_target(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    page.get_by_label("Face swap").check()
    expect(page.locator("#id_images")).to_be_hidden()
    face, target = page.get_by_label("Face image"), page.get_by_label("Target image")
    expect(face).to_be_visible()
    expect(target).to_be_visible()
    fits(page, "i16-create-face-swap")
    face.set_input_files(
        files=[{"name": "me.png", "mimeType": "image/png", "buffer": png(8, (200, 0, 0))}]
    )
    target.set_input_files(
        files=[{"name": "poster.png", "mimeType": "image/png", "buffer": png(16, (0, 0, 200))}]
    )
    page.get_by_label("Test mode").check()
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#task-feed article.task-card")).to_have_count(4)
    task = Task.objects.get(organization=tenant.organization, action=Action.SWAP_FACE)
    sizes = [Image.open(io.BytesIO(read_file(name))).size for name in task.inputs]
    assert sizes == [(8, 8), (16, 16)]  # the face first, as the picker said


def test_emoji_buttons_are_drawn_as_icons_with_the_emoji_as_text_alternative(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    card = page.locator(f"#task-{tenant.upscale.pk}")
    for title, emoji in (("Pan left", "⬅️"), ("Pan up", "⬆️"), ("Zoom Out 2x", "🔍")):
        button = card.get_by_role("button", name=title, exact=True)
        expect(button.locator("svg.icon")).to_be_visible()
        expect(button.locator(".visually-hidden")).to_have_text(emoji)
    reroll = page.locator(f"#task-{tenant.imagine.pk}").locator("button[data-custom-id*='reroll']")
    expect(reroll.locator("svg.icon")).to_be_visible()
    # The icon is drawn, not a glyph from a font: it has a size even without any emoji font.
    box = reroll.locator("svg.icon").bounding_box()
    assert box is not None and box["width"] >= 16


def test_downloads_have_meaningful_names(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    card = page.locator(f"#task-{tenant.imagine.pk}")
    with page.expect_download() as grid:
        card.get_by_test_id("download-image").click()
    stem = f"mjgate-{tenant.imagine.pk}-a-lighthouse-on-a-cliff-at-dawn"
    assert grid.value.suggested_filename == f"{stem}-grid.png"
    splits = card.get_by_test_id("download-split")
    expect(splits).to_have_count(4)
    with page.expect_download() as third:
        splits.nth(2).click()
    assert third.value.suggested_filename == f"{stem}-3.png"
    page.goto(f"{base}/tasks/{tenant.imagine.pk}/")
    with page.expect_download() as from_detail:
        page.locator("figure.split").nth(1).get_by_role("link", name="Download image 2").click()
    assert from_detail.value.suggested_filename == f"{stem}-2.png"


def test_a_button_pressed_low_in_the_feed_brings_its_new_card_into_view(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    page.set_viewport_size(PHONE)
    sign_in(page, base, tenant.user.email, then="/create/")
    # The imagine is the lowest card; on a phone the top of the feed is far above it.
    button = page.locator(f"#task-{tenant.imagine.pk}").get_by_role("button", name="U2", exact=True)
    button.scroll_into_view_if_needed()
    expect(page.locator("#task-feed article.task-card").first).not_to_be_in_viewport()
    button.click()
    new_card = page.locator("#task-feed article.task-card").first
    expect(new_card).not_to_have_attribute("id", f"task-{tenant.failed.pk}")
    expect(new_card).to_be_in_viewport()
    new_id = new_card.get_attribute("data-task-id")
    toast = page.locator("#toasts .alert")
    expect(toast).to_contain_text("Started Upscale")
    expect(toast.get_by_role("link", name=f"#{new_id}")).to_be_visible()
    assert Task.objects.get(pk=new_id).parent_id == tenant.imagine.pk


def test_a_refused_custom_zoom_keeps_the_text_and_cancel_leaves_no_waiting_task(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    card = page.locator(f"#task-{tenant.upscale.pk}")
    card.get_by_role("button", name="Custom Zoom", exact=True).click()
    dialog = page.locator("dialog.modal[open]")
    expect(dialog).to_be_visible()
    waiting = Task.objects.get(parent=tenant.upscale, status=Status.MODAL)
    typed = "a lighthouse on a cliff at dawn --zoom 7"
    dialog.get_by_label("Prompt").fill(typed)
    dialog.get_by_role("button", name="Submit").click()
    expect(page.locator("dialog.modal[open] .alert.error")).to_be_visible()
    expect(page.locator("dialog.modal[open]").get_by_label("Prompt")).to_have_value(typed)
    fits(page, "i16-custom-zoom-refused")
    waiting.refresh_from_db()
    assert waiting.status == Status.MODAL  # a refused value does not end the step
    page.locator("dialog.modal[open]").get_by_role("button", name="Cancel").click()
    expect(page.locator("dialog.modal[open]")).to_have_count(0)
    expect(page.locator(f"#task-{waiting.pk}")).to_have_count(0)
    for _ in range(100):
        waiting.refresh_from_db()
        if waiting.status != Status.MODAL:
            break
        page.wait_for_timeout(50)
    assert waiting.status == Status.CANCEL

    # Vary (Region) closed with Escape: the same.
    card.get_by_role("button", name="Vary (Region)", exact=True).click()
    expect(page.locator("dialog.modal[open]")).to_be_visible()
    region = Task.objects.get(parent=tenant.upscale, status=Status.MODAL)
    page.keyboard.press("Escape")
    expect(page.locator("dialog.modal[open]")).to_have_count(0)
    for _ in range(100):
        region.refresh_from_db()
        if region.status != Status.MODAL:
            break
        page.wait_for_timeout(50)
    assert region.status == Status.CANCEL
    page.goto(f"{base}/tasks/?status=MODAL")
    expect(page.locator("table.data tbody tr")).to_have_count(0)
