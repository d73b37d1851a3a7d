"""Fetch is one indexed statement (issue 15 P3), and a queued task says where it stands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tasks.enums import Status
from apps.tasks.selectors import task_fetch, task_get
from tests.factories import OrganizationFactory, TaskFactory


@pytest.mark.django_db
def test_fetch_reads_one_row_without_joins_or_ordering(organization: Any) -> None:
    task = TaskFactory(organization=organization, status=Status.SUCCESS)
    with CaptureQueriesContext(connection) as ctx:
        fetched = task_fetch(organization=organization, task_id=task.pk)
    assert len(ctx.captured_queries) == 1
    sql = ctx.captured_queries[0]["sql"]
    assert "JOIN" not in sql and "ORDER BY" not in sql
    expected = task_get(organization=organization, task_id=task.pk)
    for field in type(task)._meta.concrete_fields:
        assert getattr(fetched, field.attname) == getattr(expected, field.attname), field.name
    # Made without Model.__init__: a task like any loaded one (saved, related rows lazy).
    assert (fetched._state.adding, fetched._state.db) == (False, "default")
    assert fetched.organization == organization
    assert fetched == expected and fetched.pk == task.pk
    fetched.progress = 42
    fetched.save(update_fields=["progress"])
    assert task_get(organization=organization, task_id=task.pk).progress == 42


@pytest.mark.django_db
def test_fetch_fails_closed_across_tenants(organization: Any) -> None:
    other = TaskFactory(organization=OrganizationFactory(), status=Status.SUCCESS)
    with pytest.raises(Exception) as missing:
        task_fetch(organization=organization, task_id=other.pk)
    assert missing.value.__class__.__name__ == "NotFound"


@pytest.mark.django_db
def test_mjproxy_fetch_is_two_statements_at_most(organization: Any, key_client: APIClient) -> None:
    task = TaskFactory(organization=organization, status=Status.SUCCESS)
    cache.clear()
    key_client.get(f"/mj/task/{task.pk}/fetch")
    with CaptureQueriesContext(connection) as ctx:
        answer = key_client.get(f"/mj/task/{task.pk}/fetch")
    assert answer.status_code == 200
    assert answer.json()["id"] == task.pk
    assert len(ctx.captured_queries) == 1, [q["sql"] for q in ctx.captured_queries]


@pytest.mark.django_db
def test_a_queued_task_reports_its_place_in_submit_and_fetch(
    funded: Any, key_client: APIClient
) -> None:
    # No account serves the pool: every task waits, each one place further back.
    answers = [
        key_client.post("/mj/submit/imagine", {"prompt": f"fox {n}"}, format="json").json()
        for n in range(3)
    ]
    assert [a["code"] for a in answers] == [22, 22, 22]
    assert [a["properties"]["numberOfQueues"] for a in answers] == [0, 1, 2]
    fetched = key_client.get(f"/mj/task/{answers[2]['result']}/fetch").json()
    assert fetched["properties"]["numberOfQueues"] == 2
    assert fetched["properties"]["estimatedStartTime"] is None  # no throughput measured yet
    native = key_client.get(f"/api/v1/tasks/{answers[1]['result']}").json()
    assert native["properties"]["queue_position"] == 2


@pytest.mark.django_db
def test_the_expected_start_follows_the_pools_measured_throughput(
    funded: Any, key_client: APIClient
) -> None:
    now = timezone.now()
    for n in range(60):  # 60 FAST tasks finished in the last ten minutes: 0.1 per second
        TaskFactory(
            organization=funded,
            status=Status.SUCCESS,
            mode="FAST",
            started_at=now - timedelta(seconds=n + 30),
            finished_at=now - timedelta(seconds=n),
        )
    answer = key_client.post("/mj/submit/imagine", {"prompt": "a fox"}, format="json").json()
    assert answer["code"] == 22
    expected = answer["properties"]["estimatedStartTime"]
    # First in line with no free slot: about one task's worth of the pool's throughput (10 s).
    wait_ms = expected - int(now.timestamp() * 1000)
    assert 9_000 <= wait_ms <= 10_000 + 60_000
