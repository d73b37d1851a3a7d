"""The dashboard shows where a queued task stands: "n ahead, starts ~hh:mm" (issue 18)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import MembershipTier, Organization, User
from apps.tasks.enums import Action, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import TaskFactory

from .helpers import login

pytestmark = pytest.mark.django_db


def test_queued_tasks_show_tasks_ahead_and_the_expected_start(
    owner: User, organization: Organization, fund: Any, make_key: Any
) -> None:
    fund(organization, 1_000_000)
    MembershipTier.objects.filter(pk=organization.tier_id).update(max_unfinished_tasks=100)
    now = timezone.now()
    for n in range(60):  # the FAST pool finished 0.1 task a second lately
        TaskFactory(
            organization=organization,
            status=Status.SUCCESS,
            mode="FAST",
            started_at=now - timedelta(seconds=n + 30),
            finished_at=now - timedelta(seconds=n),
        )
    caller = Caller(organization=organization, api_key=make_key(organization).api_key)
    # No account serves the pool: all three wait, each one further back.
    tasks = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"fox {n}").task for n in range(3)
    ]
    client = login(owner)
    third = tasks[2]
    detail = client.get(f"/tasks/{third.pk}/")
    assert detail.context["queue"]["ahead"] == 2
    starts = detail.context["queue"]["starts"]
    assert timedelta(seconds=25) <= starts - now <= timedelta(seconds=95)
    page = detail.content.decode()
    assert "2 ahead, starts ~" in page
    assert timezone.localtime(starts).strftime("%H:%M") in page
    card = client.get(f"/tasks/{tasks[0].pk}/card/").content.decode()
    assert "Queued · " in card and "0 ahead, starts ~" in card
    history = client.get("/tasks/")
    notes = {task.pk: queue for task, _, queue in history.context["rows"]}
    assert [notes[t.pk]["ahead"] for t in tasks] == [0, 1, 2]
    assert all(note is None for pk, note in notes.items() if pk not in {t.pk for t in tasks})
    assert history.content.decode().count('data-testid="queue-note"') == 3
