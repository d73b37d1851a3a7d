"""Issue 16 below the browser: the mailbox exists only with its setting, downloads stay inside
the organization, face swap names its two images, a refused second step keeps the text."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from apps.accounts.models import Organization, User
from apps.dashboard.presenters import button_icon
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.factories import TaskFactory

from .helpers import login

pytestmark = pytest.mark.django_db


def png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_mailbox_is_a_404_without_its_setting(client: Any, settings: Any) -> None:
    settings.MAILBOX_DIR = None
    assert client.get("/dev/mailbox/").status_code == 404


def test_the_mailbox_lists_sent_mail_with_its_links(
    client: Any, settings: Any, tmp_path: Path
) -> None:
    settings.EMAIL_BACKEND = "apps.dashboard.mailbox.MailboxBackend"
    settings.MAILBOX_DIR = str(tmp_path)
    mail.send_mail(
        "Please confirm",
        "Open http://127.0.0.1:8000/accounts/confirm-email/abc/ now.",
        None,
        ["ada@example.com"],
    )
    assert len(list(tmp_path.glob("*.eml"))) == 1
    page = client.get("/dev/mailbox/").content.decode()
    assert "Please confirm" in page and "ada@example.com" in page
    assert 'href="http://127.0.0.1:8000/accounts/confirm-email/abc/"' in page


def test_a_download_is_named_and_stays_in_the_organization(
    organization: Organization, owner: User, outsider: User
) -> None:
    task = TaskFactory(organization=organization, succeeded=True, prompt="Red fox, at dusk!")
    response = login(owner).get(f"/tasks/{task.pk}/download/image/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="mjgate-{task.pk}-red-fox-at-dusk-grid.png"'
    )
    split = login(owner).get(f"/tasks/{task.pk}/download/4/")
    assert f"mjgate-{task.pk}-red-fox-at-dusk-4.png" in split["Content-Disposition"]
    assert login(owner).get(f"/tasks/{task.pk}/download/5/").status_code == 404
    assert login(outsider).get(f"/tasks/{task.pk}/download/image/").status_code == 404


def test_face_swap_takes_the_face_and_the_target_from_their_own_fields(
    organization: Organization, owner: User
) -> None:
    client = login(owner)
    form = {"action": Action.SWAP_FACE, "mode": "FAST", "test_mode": "on"}
    missing = client.post("/create/", {**form, "face": SimpleUploadedFile("f.png", png(8))})
    assert missing.status_code == 400
    assert "needs a face image and a target image" in missing.content.decode()
    assert not Task.objects.exists()
    response = client.post(
        "/create/",
        {
            **form,
            "target": SimpleUploadedFile("t.png", png(16), content_type="image/png"),
            "face": SimpleUploadedFile("f.png", png(8), content_type="image/png"),
        },
    )
    assert response.status_code == 302
    task = Task.objects.get(action=Action.SWAP_FACE)
    assert len(task.inputs) == 2


def test_a_refused_second_step_keeps_what_was_typed(
    organization: Organization, owner: User
) -> None:
    parent = TaskFactory(
        organization=organization, succeeded=True, action=Action.UPSCALE, is_test=True
    )
    waiting = TaskFactory(
        organization=organization,
        status=Status.MODAL,
        action=Action.ZOOM,
        parent=parent,
        is_test=True,
        params={"variant": "custom_zoom"},
        prompt_en="a red fox --zoom 2",
    )
    typed = "a red fox --zoom 9"
    response = login(owner).post(
        f"/tasks/{waiting.pk}/input/", {"prompt": typed}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert f">{typed}</textarea>" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == Status.MODAL


@pytest.mark.parametrize("emoji", ["🔄", "⬅️", "➡️", "⬆️", "⬇️", "🔍", "🪄", "🖌️"])
def test_every_emoji_of_our_buttons_has_a_drawing(emoji: str) -> None:
    icon = button_icon(emoji)
    assert icon is not None and icon.startswith("<svg") and 'aria-hidden="true"' in icon


@pytest.mark.parametrize("digit", ["1", "2", "3", "4", "5"])
def test_keycap_numbers_are_drawn_with_their_digit(digit: str) -> None:
    icon = button_icon(f"{digit}\ufe0f\u20e3")
    assert icon is not None and f">{digit}</text>" in icon


def test_a_button_without_a_drawing_keeps_its_text() -> None:
    assert button_icon("🦊") is None
