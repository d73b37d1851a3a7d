"""Issue 17 in a real browser: the Remix box opens the Remix Prompt dialog, the editor repaints
a painted-over region, and the Create page's reference picker adds ``--sref``."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from apps.tasks.enums import Action, Status
from apps.tasks.models import Task

from .browser import sign_in
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_remix_dialog_and_editor(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    card = page.locator(f"#task-{tenant.upscale.pk}")

    # Remix: tick the box, press Vary (Strong), change the prompt in the dialog.
    card.locator("[data-remix-toggle]").check()
    card.get_by_role("button", name="Vary (Strong)", exact=True).click()
    dialog = page.locator("dialog.modal[open]")
    expect(dialog.get_by_role("heading", name="Remix Prompt")).to_be_visible()
    dialog.get_by_label("Prompt").fill("a lighthouse in a blue storm")
    dialog.get_by_role("button", name="Submit").click()
    expect(page.locator("dialog.modal[open]")).to_have_count(0)
    remixed = Task.objects.get(parent=tenant.upscale, action=Action.VARIATION)
    assert remixed.params["remix"] is True
    assert remixed.prompt_en == "a lighthouse in a blue storm"
    assert remixed.status != Status.MODAL

    # The editor: paint a region of the picture, give the prompt, submit.
    card.locator('[data-editor="edit"]').click()
    editor = page.locator("dialog.modal[open]")
    expect(editor.get_by_role("heading", name="Edit")).to_be_visible()
    submit = editor.get_by_role("button", name="Submit")
    expect(submit).to_be_disabled()
    editor.get_by_role("button", name="Centre").click()
    editor.get_by_label("Prompt").fill("a red door")
    submit.click()
    expect(page.locator("dialog.modal[open]")).to_have_count(0)
    edit = Task.objects.get(action=Action.EDIT)
    assert edit.prompt_en == "a red door" and edit.params["mask"].startswith("inputs/")


def test_create_with_a_style_reference(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant(tasks_are_test=True)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    page.get_by_label("Prompt", exact=True).fill("a quiet harbour --v 7")
    page.locator('input[name="sref_image"]').set_input_files(
        files=[{"name": "style.png", "mimeType": "image/png", "buffer": png((0, 0, 255))}]
    )
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#task-feed .card").first).to_be_visible()
    # A task started: the chosen file is cleared for the next one (app.js, htmx:afterRequest).
    expect(page.locator('input[name="sref_image"]')).to_have_value("")
    for _ in range(100):
        created = Task.objects.filter(
            organization=tenant.organization, action=Action.IMAGINE, prompt__contains="harbour"
        ).first()
        if created is not None:
            break
        page.wait_for_timeout(50)
    assert created is not None
    assert "--sref http" in created.prompt_en and created.params["references"]["sref"]
