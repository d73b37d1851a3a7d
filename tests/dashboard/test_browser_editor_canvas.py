"""The editor's canvas in a real browser: enlarge the canvas to a preset shape, move the picture
inside it, submit without painting — the uncovered area is what gets filled — and the sandbox's
result has the larger canvas's shape."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from apps.engines.models import UpstreamAccount
from apps.tasks import storage
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME, sandbox_pool_ensure
from tests.tasks.helpers import run_to_completion

from .browser import sign_in
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def picture(name: str) -> Image.Image:
    return Image.open(io.BytesIO(storage.read_file(name)))


def test_enlarge_the_canvas_and_outpaint(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    sandbox_pool_ensure()
    UpstreamAccount.objects.filter(name=SANDBOX_POOL_NAME).update(options={"duration": 0})
    source = picture(tenant.upscale.result["image"])
    width, height = source.size
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    page.locator(f"#task-{tenant.upscale.pk}").locator('[data-editor="edit"]').click()
    editor = page.locator("dialog.modal[open]")
    expect(editor.get_by_role("heading", name="Edit")).to_be_visible()
    submit = editor.get_by_role("button", name="Submit")
    expect(submit).to_be_disabled()

    # 16:9 around the picture, the picture moved to the left edge.
    wide = round(height * 16 / 9) if width / height < 16 / 9 else width
    tall = height if width / height < 16 / 9 else round(width * 9 / 16)
    editor.get_by_label("Shape").select_option("16:9")
    area = editor.locator("[data-mask-editor]")
    expect(area).to_have_attribute("data-canvas", f"{wide}x{tall}")
    expect(editor.get_by_label("Width")).to_have_value(str(wide))
    editor.get_by_label("Picture across").fill("0")
    # Enlarged: submitting needs no painting, the uncovered area is the region to fill.
    expect(submit).to_be_enabled()
    editor.get_by_label("Prompt").fill("a wide green valley")
    submit.click()
    expect(page.locator("dialog.modal[open]")).to_have_count(0)

    edit = Task.objects.get(action=Action.EDIT, organization=tenant.organization)
    sent = picture(edit.inputs[0]).convert("RGBA")
    assert sent.size == (wide, tall)
    # The picture sits at the left edge; the rest of the canvas is transparent.
    assert sent.getpixel((0, tall // 2))[3] == 255
    assert sent.getpixel((wide - 1, tall // 2))[3] == 0
    mask = picture(edit.params["mask"]).convert("L")
    assert mask.size == (wide, tall)
    assert mask.getpixel((1, tall // 2)) < 128 and mask.getpixel((wide - 1, tall // 2)) >= 128

    done = run_to_completion(edit.pk)
    assert done.status == Status.SUCCESS, done.fail_reason
    grid = picture(done.result["image"])
    # The result is a 2x2 grid of the enlarged canvas: its shape is 16:9, not the picture's.
    assert abs(grid.width / grid.height - wide / tall) < 0.02
    assert abs(grid.width / grid.height - width / height) > 0.3
    # Its left part is still the picture; the filled right part is new paint.
    quadrant = grid.crop((0, 0, grid.width // 2, grid.height // 2)).convert("RGB")
    left = quadrant.getpixel((2, quadrant.height // 2))
    right = quadrant.getpixel((quadrant.width - 3, quadrant.height // 2))
    kept = source.convert("RGB").getpixel((2, height // 2))
    assert max(abs(a - b) for a, b in zip(left, kept, strict=True)) < 40
    assert right != left


def test_animate_manually_opens_the_prompt_dialog(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    sandbox_pool_ensure()
    UpstreamAccount.objects.filter(name=SANDBOX_POOL_NAME).update(options={"duration": 0})
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    card = page.locator(f"#task-{tenant.upscale.pk}")
    card.get_by_role("button", name="Animate Manually (High motion)").click()
    dialog = page.locator("dialog.modal[open]")
    expect(dialog.get_by_role("heading", name="Animate Manually")).to_be_visible()
    waiting = Task.objects.get(parent=tenant.upscale, action=Action.VIDEO)
    assert waiting.status == Status.MODAL and waiting.tokens_charged == 0
    dialog.get_by_label("Prompt").fill("the lighthouse beam sweeps --bs 1")
    dialog.get_by_role("button", name="Submit").click()
    expect(page.locator("dialog.modal[open]")).to_have_count(0)
    video = run_to_completion(waiting.pk)
    assert video.status == Status.SUCCESS, video.fail_reason
    assert video.prompt_en == "the lighthouse beam sweeps"
    assert (video.params["manual"], video.params["motion"], len(video.result["videos"])) == (
        True,
        "high",
        1,
    )
