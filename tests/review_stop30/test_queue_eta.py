"""Review of 0e1d6b1 (queue ETA): a pool's history is one cached statement whose read stops
near the jobs it averages. A test pool (or an organization's own accounts) whose successes are
rare among the day's must not read the whole day's successes of the mode to find them: that
read runs inside the submit that refreshes it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.tasks import selectors
from apps.tasks.enums import Mode, Status
from apps.tasks.models import Task
from tests.factories import TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db

#: The live pool's successes of the past day (a small day: production has far more).
DAY = 20_000
#: Rows a history read may examine, well above the 50 jobs it averages.
BOUND = 2_500


def _clone_successes(template: Task, count: int) -> None:
    """``count`` copies of the finished ``template``, one every four seconds back from now."""
    columns = [f.column for f in Task._meta.concrete_fields]
    timed = {"id", "submitted_at", "created_at", "started_at", "finished_at", "updated_at"}
    kept = ", ".join(c for c in columns if c not in timed)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO tasks_task ({kept}, id, submitted_at, created_at, started_at,
                                    finished_at, updated_at)
            SELECT {kept}, 'clone' || g, now() - g * interval '4 seconds',
                   now() - g * interval '4 seconds', now() - g * interval '4 seconds' + '1 second',
                   now() - g * interval '4 seconds' + '30 seconds', now()
            FROM tasks_task, generate_series(1, %s) g WHERE id = %s
            """,  # noqa: S608 - our own table and columns
            [count, template.pk],
        )
        cursor.execute("ANALYZE tasks_task")


def _examined(sql: str) -> int:
    """Rows the scans of ``sql`` read (returned or filtered out), by EXPLAIN ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    total = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal total
        if "Scan" in node["Node Type"]:
            loops = node.get("Actual Loops", 1) or 1
            total += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return total


def _history_statement(read: Any) -> str:
    selectors.pool_throughput_forget()
    with CaptureQueriesContext(connection) as ctx:
        read()
    [statement] = [q["sql"] for q in ctx.captured_queries]
    return statement


@pytest.fixture
def live_day(organization):
    if connection.vendor != "postgresql":
        pytest.skip("the plan of PostgreSQL's history statement")
    now = timezone.now()
    template = TaskFactory(
        organization=organization,
        status=Status.SUCCESS,
        mode=Mode.FAST,
        is_test=False,
        submitted_at=now - timedelta(minutes=1),
        started_at=now - timedelta(seconds=60),
        finished_at=now - timedelta(seconds=31),
    )
    _clone_successes(template, DAY)
    return organization


def test_the_test_pools_history_does_not_read_the_live_pools_day(live_day):
    statement = _history_statement(lambda: selectors.pool_history(mode=Mode.FAST, is_test=True))
    assert _examined(statement) <= BOUND


def test_the_live_pools_history_stays_bounded(live_day):
    statement = _history_statement(lambda: selectors.pool_history(mode=Mode.FAST, is_test=False))
    assert _examined(statement) <= BOUND
    history = selectors.pool_history(mode=Mode.FAST, is_test=False)
    assert history.jobs == selectors.JOB_HISTORY_SIZE
    assert history.job_seconds == pytest.approx(29.0)


def test_own_accounts_history_does_not_read_the_organizations_day(live_day):
    # The organization has its own account too, but its day ran on the shared pool.
    UpstreamAccountFactory(name="mine", owner=live_day, modes=[Mode.FAST])
    statement = _history_statement(
        lambda: selectors.own_history(organization_id=live_day.pk, mode=Mode.FAST)
    )
    assert _examined(statement) <= BOUND
