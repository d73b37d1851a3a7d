"""Every way to press a button, in every dialect and the dashboard, is all or nothing.

A press that is refused — a button the parent lacks, a mode it does not run in, a mask that is
not an image, a custom zoom without a usable ``--zoom`` — leaves no task, no ledger entry and
no webhook outbox row behind, and a MODAL task waiting for its second step stays as it was.
TTAPI's action endpoints press a two-step button and give its second step in one call: a
rejected mask there must not leave a MODAL task behind (issue 12).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import Organization, User
from apps.api_keys.services import IssuedKey
from apps.billing.models import LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.enums import Status
from apps.tasks.models import Protocol, Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.dashboard.helpers import login
from tests.tasks.helpers import button_id, data_url, png_data_url, run_to_completion, stored_files

pytestmark = pytest.mark.django_db

NOT_AN_IMAGE = data_url(b"this is not an image")


@dataclass(frozen=True)
class World:
    organization: Organization
    api: APIClient
    dashboard: Client
    grid: Task
    upscale: Task
    #: A Vary (Region) press waiting for its mask.
    waiting: Task


@pytest.fixture
def world(
    funded: Organization,
    live_key: IssuedKey,
    owner: User,
    client_for: Callable[[IssuedKey], APIClient],
    finished_imagine: Callable[..., Task],
) -> World:
    # An endpoint for every event: a refused press must not publish anything to it.
    WebhookEndpoint.objects.create(organization=funded, url="https://hooks.example/all")
    caller = Caller(organization=funded, api_key=live_key.api_key, protocol=Protocol.MJPROXY)
    grid = finished_imagine()
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1")).task.pk
    )
    waiting = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    assert waiting.status == Status.MODAL
    return World(funded, client_for(live_key), login(owner), grid, upscale, waiting)


def _state(world: World) -> tuple[Any, ...]:
    balance = balance_get(organization=world.organization)
    return (
        Task.objects.count(),
        LedgerEntry.objects.count(),
        (balance.available, balance.held),
        WebhookEvent.objects.count(),
        WebhookDelivery.objects.count(),
        stored_files(settings.MEDIA_ROOT),
        Task.objects.get(pk=world.waiting.pk).status,
    )


def _mjproxy_refused(response: Any) -> None:
    assert response.status_code == 200
    assert response.json()["code"] == 4, response.json()


def _ttapi_refused(response: Any) -> None:
    assert response.status_code == 400, response.json()
    assert response.json()["status"] == "FAILED"


def _native_refused(response: Any) -> None:
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "validation_error"


def _dashboard_refused(response: Any) -> None:
    assert response.status_code == 400


#: (dialect check, the refused request).
PRESSES: dict[str, tuple[Callable[[Any], None], Callable[[World], Any]]] = {
    "mjproxy-action-button-not-on-parent": (
        _mjproxy_refused,
        lambda w: w.api.post(
            "/mj/submit/action",
            {"taskId": w.grid.pk, "customId": button_id(w.upscale, label="Vary (Subtle)")},
            format="json",
        ),
    ),
    "mjproxy-action-other-mode": (
        _mjproxy_refused,
        lambda w: w.api.post(
            "/mj/submit/action",
            {"taskId": w.grid.pk, "customId": button_id(w.grid, label="U2"), "mode": "RELAX"},
            format="json",
        ),
    ),
    "mjproxy-modal-mask-not-an-image": (
        _mjproxy_refused,
        lambda w: w.api.post(
            "/mj/submit/modal",
            {"taskId": w.waiting.pk, "maskBase64": NOT_AN_IMAGE},
            format="json",
        ),
    ),
    "mjproxy-change-button-not-on-parent": (
        _mjproxy_refused,
        lambda w: w.api.post(
            "/mj/submit/change",
            {"taskId": w.upscale.pk, "action": "UPSCALE", "index": 1},
            format="json",
        ),
    ),
    "mjproxy-simple-change-button-not-on-parent": (
        _mjproxy_refused,
        lambda w: w.api.post(
            "/mj/submit/simple-change", {"content": f"{w.upscale.pk} V2"}, format="json"
        ),
    ),
    "ttapi-action-inpaint-mask-not-an-image": (
        _ttapi_refused,
        lambda w: w.api.post(
            "/midjourney/v1/action",
            {"jobId": w.upscale.pk, "action": "inpaint", "mask": NOT_AN_IMAGE, "prompt": "a hat"},
            format="json",
        ),
    ),
    "ttapi-inpaint-mask-not-an-image": (
        _ttapi_refused,
        lambda w: w.api.post(
            "/midjourney/v1/inpaint",
            {"jobId": w.upscale.pk, "mask": NOT_AN_IMAGE, "prompt": "a hat"},
            format="json",
        ),
    ),
    "ttapi-action-custom-zoom-out-of-range": (
        _ttapi_refused,
        lambda w: w.api.post(
            "/midjourney/v1/action",
            {"jobId": w.upscale.pk, "action": "outpaint_custom", "prompt": "a fox --zoom 7"},
            format="json",
        ),
    ),
    "ttapi-action-unknown-name": (
        _ttapi_refused,
        lambda w: w.api.post(
            "/midjourney/v1/action", {"jobId": w.grid.pk, "action": "upsample9"}, format="json"
        ),
    ),
    "native-button-not-on-parent": (
        _native_refused,
        lambda w: w.api.post(
            "/api/v1/tasks", {"parent": w.upscale.pk, "button": "U1"}, format="json"
        ),
    ),
    "native-modal-mask-not-an-image": (
        _native_refused,
        lambda w: w.api.post(
            f"/api/v1/tasks/{w.waiting.pk}/modal", {"mask": NOT_AN_IMAGE}, format="json"
        ),
    ),
    "dashboard-action-button-not-on-parent": (
        _dashboard_refused,
        lambda w: w.dashboard.post(
            f"/tasks/{w.grid.pk}/action/", {"custom_id": "MJ::JOB::upsample::1::not-this-one"}
        ),
    ),
    "dashboard-input-mask-not-an-image": (
        _dashboard_refused,
        lambda w: w.dashboard.post(f"/tasks/{w.waiting.pk}/input/", {"mask": NOT_AN_IMAGE}),
    ),
}


@pytest.mark.parametrize("case", sorted(PRESSES))
def test_a_refused_press_leaves_nothing_behind(world: World, case: str) -> None:
    refused, request = PRESSES[case]
    before = _state(world)

    refused(request(world))

    assert _state(world) == before


def test_the_same_presses_done_right_do_write(world: World) -> None:
    """The control: the endpoint above does receive events, and a good press is accepted."""
    before_events = WebhookEvent.objects.count()
    response = world.api.post(
        "/midjourney/v1/action",
        {"jobId": world.upscale.pk, "action": "inpaint", "mask": png_data_url((255, 255, 255))},
        format="json",
    )
    assert response.status_code == 200, response.json()
    task = Task.objects.get(pk=response.json()["data"]["jobId"])
    # One step: accepted and held at once, never parked in MODAL.
    assert task.status in (Status.NOT_START, Status.SUBMITTED)
    assert task.params["mask"]
    assert balance_get(organization=world.organization).held > 0
    assert WebhookEvent.objects.count() > before_events
