"""The dashboard and video: create one from a start frame, play and download its clips, and
the Animate buttons on an upscale."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.models import Organization, User
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit
from tests.tasks.helpers import png_data_url, run_to_completion, sandbox_account

from .helpers import login

pytestmark = pytest.mark.django_db


def test_create_a_video_then_play_and_download_its_clips(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 200_000)
    sandbox_account()
    client = login(owner)
    page = client.get("/create/").content.decode()
    assert 'value="VIDEO"' in page
    # The price tiles read the organization's table, which lists VIDEO per mode.
    assert '"VIDEO": {"FAST": 112000' in page
    png = base64.b64decode(png_data_url().split(",", 1)[1])
    response = client.post(
        "/create/",
        {
            "action": "VIDEO",
            "prompt": "slow waves",
            "mode": "FAST",
            "images": [SimpleUploadedFile("frame.png", png, content_type="image/png")],
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content[:500]
    task = Task.objects.get(organization=organization)
    assert (task.action, task.price, task.prompt) == (Action.VIDEO, 112_000, "slow waves")
    done = run_to_completion(task.pk)
    assert done.status == Status.SUCCESS, done.fail_reason
    html = client.get(f"/tasks/{done.pk}/").content.decode()
    assert html.count('data-testid="task-video"') == 4
    assert html.count('data-testid="download-video"') == 4
    assert ".mp4" in html and "poster=" in html
    # The clip the page links is served as video/mp4 and seekable.
    url = next(part.split('"')[0] for part in html.split('src="')[1:] if ".mp4" in part)
    clip = client.get(url, HTTP_RANGE="bytes=0-99")
    assert (clip.status_code, clip["Content-Type"]) == (206, "video/mp4")
    assert len(clip.content) == 100 and clip["Content-Range"].startswith("bytes 0-99/")


def test_an_upscale_card_offers_the_animate_buttons(
    owner: User, organization: Organization, fund: Any, live_key: Any
) -> None:
    fund(organization, 200_000)
    sandbox_account()
    caller = Caller(organization=organization, api_key=live_key.api_key)
    grid = run_to_completion(task_submit(caller=caller, action="IMAGINE", prompt="a fox").task.pk)
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=grid.buttons[0]["custom_id"]).task.pk
    )
    html = login(owner).get(f"/tasks/{upscale.pk}/").content.decode()
    assert 'aria-label="Video"' in html
    assert "MJ::JOB::animate_high::1::" in html and "MJ::JOB::animate_low::1::" in html


def test_create_an_hd_video_with_an_end_frame(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 500_000)
    client = login(owner)
    page = client.get("/create/").content.decode()
    assert 'name="resolution"' in page and 'name="end_image"' in page
    start = base64.b64decode(png_data_url((200, 30, 30)).split(",", 1)[1])
    end = base64.b64decode(png_data_url((20, 40, 230)).split(",", 1)[1])
    response = client.post(
        "/create/",
        {
            "action": "VIDEO",
            "prompt": "the light changes",
            "mode": "FAST",
            "resolution": "720p",
            "images": [SimpleUploadedFile("frame.png", start, content_type="image/png")],
            "end_image": SimpleUploadedFile("end.png", end, content_type="image/png"),
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content[:500]
    task = Task.objects.get(organization=organization)
    assert task.params["resolution"] == "720p" and task.params["end_frame"] is True
    assert task.price == 358_400  # the VIDEO_HD row, a batch of 4
    refused = client.post(
        "/create/",
        {
            "action": "VIDEO",
            "prompt": "the light changes",
            "mode": "RELAX",
            "resolution": "720p",
            "images": [SimpleUploadedFile("frame.png", start, content_type="image/png")],
        },
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 400 and "720p" in refused.content.decode()
    assert Task.objects.filter(organization=organization).count() == 1
