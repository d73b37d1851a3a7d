"""The dispatcher's fair pick on PostgreSQL (per-tenant ``LATERAL … LIMIT`` over the partial
index on queued rows) chooses exactly what the portable window query chooses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.tasks.enums import Mode, Pool
from apps.tasks.models import Task
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


TENANTS: list[int] = []


@pytest.fixture
def queue() -> list[str]:
    """Five tenants with backlogs of different sizes, modes, pools and test flags,
    interleaved in time (and two tasks of one tenant submitted in the same instant)."""
    start = timezone.now() - timedelta(minutes=5)
    tenants = [OrganizationFactory() for _ in range(5)]
    TENANTS[:] = [t.pk for t in tenants]
    ids = []
    plan = [
        (0, 12, Mode.FAST, False, Pool.SHARED),
        (1, 1, Mode.FAST, False, Pool.SHARED),
        (2, 4, Mode.RELAX, False, Pool.SHARED),
        (3, 3, Mode.FAST, True, Pool.SHARED),
        (4, 6, Mode.TURBO, False, Pool.SHARED),
        (1, 2, Mode.RELAX, False, Pool.SHARED),
        (2, 5, Mode.FAST, False, Pool.OWN),
        (0, 3, Mode.FAST, False, Pool.OWN_THEN_SHARED),
        (4, 2, Mode.FAST, False, Pool.OWN),
    ]
    second = 0
    for tenant, count, mode, is_test, pool in plan:
        for _ in range(count):
            second += 1
            ids.append(
                TaskFactory(
                    queued=True,
                    organization=tenants[tenant],
                    mode=mode,
                    is_test=is_test,
                    pool=pool,
                    submitted_at=start + timedelta(seconds=second // 2),
                ).pk
            )
    TaskFactory(running=True, organization=tenants[1])  # not queued: never picked
    return ids


def _pools(live: set[str], test: set[str], owners: dict[int, set[str]]) -> list:
    """Free shared slots of the ``live`` modes, sandbox slots of the ``test`` ones, and free
    slots of own accounts of tenants (by index) in their modes."""
    pools = {(False, m, p, None) for m in live for p in (Pool.SHARED, Pool.OWN_THEN_SHARED)}
    pools |= {(True, m, Pool.SHARED, None) for m in test}
    for index, modes in owners.items():
        owner = TENANTS[index]
        pools |= {(False, m, p, owner) for m in modes for p in (Pool.OWN, Pool.OWN_THEN_SHARED)}
    return sorted(pools, key=lambda p: (p[0], p[1], p[2], p[3] or 0))


@pytest.mark.parametrize(
    "live, test, owners, free",
    [
        ({Mode.FAST, Mode.RELAX, Mode.TURBO}, {Mode.FAST}, {}, 3),
        ({Mode.FAST}, set(), {}, 5),
        ({Mode.RELAX, Mode.TURBO}, {Mode.FAST, Mode.RELAX}, {}, 1),
        ({Mode.FAST, Mode.RELAX}, set(), {}, 40),
        ({Mode.FAST}, set(), {2: {Mode.FAST}, 0: {Mode.FAST}}, 4),
        (set(), set(), {2: {Mode.FAST}}, 3),
        ({Mode.TURBO}, set(), {4: {Mode.FAST, Mode.TURBO}}, 40),
    ],
)
def test_the_lateral_pick_equals_the_window_pick(queue, live, test, owners, free):
    pools = _pools(live, test, owners)
    lateral = _queued_candidates_lateral(pools, free)
    assert lateral == _queued_candidates_window(pools, free)
    assert lateral  # the case picks something, so the comparison means something


def test_the_pick_keeps_pools_apart(queue):
    """Only tenant 2's own slots are free: only its own-only tasks are candidates; only
    shared slots free: no own-only task is; an own-then-shared task is found once."""
    own_only = _queued_candidates_lateral(_pools(set(), set(), {2: {Mode.FAST}}), 40)
    rows = Task.objects.filter(pk__in=own_only)
    assert {(t.organization_id, t.pool) for t in rows} == {(TENANTS[2], Pool.OWN)}
    assert len(own_only) == 5
    shared = _queued_candidates_lateral(_pools({Mode.FAST}, set(), {0: {Mode.FAST}}), 100)
    assert len(shared) == len(set(shared))
    pools_seen = set(Task.objects.filter(pk__in=shared).values_list("pool", flat=True))
    assert Pool.OWN not in pools_seen
    assert Pool.OWN_THEN_SHARED in pools_seen


def test_the_pick_reads_only_the_partial_index_of_queued_rows(queue):
    """The plan walks the partial indexes of queued rows (a skip scan for the tenants, then a
    few entries per tenant): ``task_queued_fair`` or the tenant queue's ``task_tenant_queued``,
    which leads with the same columns (on a table this small the planner may take either);
    never the whole table or the all-status ``task_queue`` index (sequential scans off: this
    table is tiny). ``bench/dispatch.py`` times the pick at 100,000 queued."""
    sql, params = lateral_pick_sql(_pools({Mode.FAST, Mode.RELAX}, set(), {}), 3)
    with connection.cursor() as cursor:
        # A table in service holds far more finished tasks than queued ones: with only queued
        # rows, every index of the tenants' rows looks as good as the partial ones to the
        # planner, which then took ``task_org_status`` now and then.
        cursor.execute(
            "INSERT INTO tasks_task SELECT (jsonb_populate_record(NULL::tasks_task, "
            "to_jsonb(t) || jsonb_build_object('id', t.id || 'f' || g, 'status', 'SUCCESS', "
            "'tenant_seq', NULL))).* FROM tasks_task t, generate_series(1, 20) g"
        )
        cursor.execute("ANALYZE tasks_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    scans = [line for line in plan.splitlines() if " Scan using " in line]
    assert scans, plan
    assert all(("task_queued_fair" in s or "task_tenant_queued" in s) for s in scans), plan
    assert "Seq Scan on tasks_task" not in plan
    assert "Sort Key: tasks_task" not in plan  # no sort of the queue itself


def _slots(free: dict[str, int], owners: dict[int, int] | None = None) -> dict:
    """Free slots: one shared account per entry of ``free`` (its modes comma-separated), and
    an own FAST account of tenant ``index`` with ``n`` free slots per entry of ``owners``."""
    from apps.engines.models import UpstreamAccount
    from apps.tasks.scheduling import _Slot

    slots = {}
    for n, (modes, count) in enumerate(free.items(), start=1):
        account = UpstreamAccount(pk=n, is_sandbox_pool=False, owner_id=None, engine="sandbox")
        slots[n] = _Slot(account, count, 0, modes.split(","))
    for index, count in (owners or {}).items():
        pk = 100 + index
        account = UpstreamAccount(
            pk=pk, is_sandbox_pool=False, owner_id=TENANTS[index], engine="sandbox"
        )
        slots[pk] = _Slot(account, count, 0, [Mode.FAST])
    return slots


def _chosen(candidates: list[str], slots: dict, running: dict[int, int]) -> list[str]:
    """What a pass assigns from ``candidates`` (the dispatcher's own choosing loop)."""
    import copy
    from collections import defaultdict

    from apps.tasks.scheduling import _choose, _lock_queued

    org_running: dict[int, int] = defaultdict(int)
    waiting = _lock_queued(candidates, org_running, running)
    pairs: list = []
    _choose(waiting, copy.deepcopy(slots), org_running, pairs)
    return [task.pk for task, _ in pairs]


@pytest.mark.parametrize(
    "free, owners, busy",
    [
        ({"FAST,RELAX,TURBO": 3}, {}, {}),
        ({"FAST": 1}, {}, {}),
        ({"FAST": 1}, {}, {0: 2, 1: 0, 2: 1}),
        ({"FAST,RELAX": 5}, {}, {2: 3}),
        ({"FAST,RELAX,TURBO": 40}, {}, {0: 1}),
        ({"RELAX": 2, "TURBO": 2}, {}, {1: 4}),
        ({"FAST": 2}, {2: 3, 0: 1}, {2: 1}),
        ({}, {4: 2}, {}),
    ],
)
def test_the_quick_pick_chooses_what_the_full_pick_chooses(queue, free, owners, busy):
    """The pick by tenant heads reads only the tenants the free slots can reach, a few tasks
    each; what the pass then assigns is what it assigns from the full pick (each tenant's
    ``free`` oldest tasks per pool), running tasks and own accounts included."""
    from apps.tasks.scheduling import (
        _free_pools,
        _queued_candidates_fair,
    )

    for index, count in busy.items():
        for _ in range(count):
            TaskFactory(running=True, organization_id=TENANTS[index])
    slots = _slots(free, owners)
    pools = _free_pools(slots)
    total = sum(s.free for s in slots.values())
    quick = _queued_candidates_fair(slots, pools)
    assert quick.running is not None
    ordered = sorted(pools, key=lambda p: (p[0], p[1], p[2], p[3] or 0))
    full = _queued_candidates_lateral(ordered, total)
    expected = _chosen(full, slots, quick.running)
    assert expected
    got = _chosen(quick.ids, slots, quick.running)
    if len(got) < len(expected):
        assert quick.truncated  # the pass picks again the long way
    else:
        assert got == expected


def test_the_quick_pick_reads_the_heads_by_the_partial_index(queue):
    """The heads walk one entry per (tenant, pool) of the partial index of queued rows."""
    from apps.tasks.scheduling import _heads_sql

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + _heads_sql())
        plan = "\n".join(row[0] for row in cursor.fetchall())
    queued_scans = [
        line for line in plan.splitlines() if " Scan using " in line and "queue " not in line
    ]
    assert any("task_queued_fair" in s for s in queued_scans), plan
    assert "Seq Scan on tasks_task" not in plan
