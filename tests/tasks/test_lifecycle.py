from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit

from .helpers import run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


def _open(name: str) -> Image.Image:
    with default_storage.open(name, "rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
        return image


def test_imagine_runs_to_success_and_captures(organization, live_key, fund):
    fund(organization, 100_000)
    sandbox_account()
    caller = Caller(organization=organization, api_key=live_key.api_key)
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox --ar 3:2")
    assert outcome.result == "started"
    assert balance_get(organization=organization).held == 14000
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS
    assert task.progress == 100
    grid = _open(task.result["image"])
    assert grid.width > grid.height
    assert len(task.result["splits"]) == 4
    assert [b["label"] for b in task.buttons][:4] == ["U1", "U2", "U3", "U4"]
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (100_000 - 14000, 0)
    kinds = list(
        LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EntryKind.HOLD, EntryKind.CAPTURE]


def test_upscale_follow_up(organization, live_key, fund):
    fund(organization, 100_000)
    sandbox_account()
    caller = Caller(organization=organization, api_key=live_key.api_key)
    parent = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="blue sky").task.pk
    )
    u1 = next(b for b in parent.buttons if b["label"] == "U1")
    outcome = task_press(caller=caller, parent_id=parent.pk, custom_id=u1["custom_id"])
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS
    assert task.action == Action.UPSCALE
    assert task.result["is_grid"] is False
    assert "Vary (Region)" in [b["label"] for b in task.buttons]
    assert balance_get(organization=organization).available == 100_000 - 14000 - 3500
