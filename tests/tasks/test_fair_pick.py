"""The dispatcher's fair pick on PostgreSQL (per-tenant ``LATERAL … LIMIT`` over the partial
index on queued rows) chooses exactly what the portable window query chooses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.tasks.enums import Mode
from apps.tasks.scheduling import (
    _queued_candidates_lateral,
    _queued_candidates_window,
    lateral_pick_sql,
)
from tests.factories import OrganizationFactory, TaskFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.TESTS_ON_POSTGRES, reason="the LATERAL pick is PostgreSQL's"),
]


@pytest.fixture
def queue() -> list[str]:
    """Five tenants with backlogs of different sizes, modes and test flags, interleaved in
    time (and two tasks of one tenant submitted in the same instant)."""
    start = timezone.now() - timedelta(minutes=5)
    tenants = [OrganizationFactory() for _ in range(5)]
    ids = []
    plan = [
        (0, 12, Mode.FAST, False),
        (1, 1, Mode.FAST, False),
        (2, 4, Mode.RELAX, False),
        (3, 3, Mode.FAST, True),
        (4, 6, Mode.TURBO, False),
        (1, 2, Mode.RELAX, False),
    ]
    second = 0
    for tenant, count, mode, is_test in plan:
        for _ in range(count):
            second += 1
            ids.append(
                TaskFactory(
                    queued=True,
                    organization=tenants[tenant],
                    mode=mode,
                    is_test=is_test,
                    submitted_at=start + timedelta(seconds=second // 2),
                ).pk
            )
    TaskFactory(running=True, organization=tenants[1])  # not queued: never picked
    return ids


@pytest.mark.parametrize(
    "live, test, free",
    [
        ({Mode.FAST, Mode.RELAX, Mode.TURBO}, {Mode.FAST}, 3),
        ({Mode.FAST}, set(), 5),
        ({Mode.RELAX, Mode.TURBO}, {Mode.FAST, Mode.RELAX}, 1),
        ({Mode.FAST, Mode.RELAX}, set(), 40),
    ],
)
def test_the_lateral_pick_equals_the_window_pick(queue, live, test, free):
    pools = sorted({(False, m) for m in live} | {(True, m) for m in test})
    lateral = _queued_candidates_lateral(pools, free)
    assert lateral == _queued_candidates_window(live, test, free)
    assert lateral  # the case picks something, so the comparison means something


def test_the_pick_reads_only_the_partial_index_of_queued_rows(queue):
    """The plan walks ``task_queued_fair`` (a skip scan for the tenants, then a few entries
    per tenant), never the whole table (sequential scans off: this table is tiny)."""
    sql, params = lateral_pick_sql([(False, Mode.FAST.value), (False, Mode.RELAX.value)], 3)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "task_queued_fair" in plan
    assert "Sort Key: tasks_task" not in plan  # no sort of the queue itself
