#!/usr/bin/env python
"""Issues 14/15/18: the fair queue position stays flat as the queue grows. Prints JSON.

    .venv/bin/python bench/queue_position.py                       # 1,000 then 100,000 queued
    .venv/bin/python bench/queue_position.py --sizes 1000 20000 --tenants 50

For each size the queue is filled (bulk INSERT, numbered per tenant the way the acceptance
numbers them, spread over ``--tenants`` tenants and three pools) and VACUUM ANALYZEd, then, in
this process, timed (median of ``--samples`` calls):

- ``estimate_ms``: ``task_queue_estimate`` of the newest task of one tenant with the pool's
  snapshot re-read on every call (``fresh=True``: the worst case; the submit path re-reads it
  once a second per process) — every statement the estimate runs;
- ``snapshot_ms``, ``probe_ms``: EXPLAIN ANALYZE execution time of its two queue statements;
- ``count_ms_baseline``: a COUNT of the pool's queue ahead of that task, what issue 15 forbids
  per submit.

``flatness`` is estimate_ms at the largest size over estimate_ms at the smallest (≈ 1: flat).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--tenants", type=int, default=30)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def fill(target: int, state: dict[str, Any]) -> None:
    """Queue tasks until ``target`` are queued, numbered per tenant and pool."""
    from django.db import connection
    from django.utils import timezone

    from apps.tasks.enums import Mode, Status
    from apps.tasks.models import Task

    modes = [Mode.FAST, Mode.FAST, Mode.RELAX]
    orgs = state["orgs"]
    batch: list[Task] = []
    start = state["queued"]
    now = timezone.now()
    for index in range(start, target):
        org = orgs[index % len(orgs)].pk
        mode = modes[index % 3]
        seq = state["numbers"].get((org, mode), 0) + 1
        state["numbers"][(org, mode)] = seq
        batch.append(
            Task(
                id=f"88{index:012d}",
                organization_id=org,
                action="IMAGINE",
                mode=mode,
                status=Status.NOT_START,
                prompt="queued",
                prompt_en="queued",
                submitted_at=now,
                tenant_seq=seq,
            )
        )
        if len(batch) == 5000:
            Task.objects.bulk_create(batch)
            batch = []
    if batch:
        Task.objects.bulk_create(batch)
    state["queued"] = target
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tasks_task")


def execution_ms(sql: str, params: Any) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, params)
        return float(cursor.fetchone()[0][0]["Execution Time"])


def measure(samples: int) -> dict[str, Any]:
    from apps.tasks import selectors
    from apps.tasks.enums import Mode, Status
    from apps.tasks.models import Task

    task = (
        Task.objects.filter(status=Status.NOT_START, mode=Mode.FAST)
        .order_by("-tenant_seq", "pk")
        .first()
    )
    assert task is not None
    pool = {"mode": task.mode, "is_test": task.is_test}
    ahead = selectors.task_tasks_ahead(task=task, fresh=True)
    timings = []
    for _ in range(samples + 1):
        began = time.perf_counter()
        selectors.task_queue_estimate(task=task, fresh=True)
        timings.append((time.perf_counter() - began) * 1000)
    snapshot = selectors.pool_snapshot(fresh=True, **pool)
    wanted = {org: queue.head for org, queue in list(snapshot.items())[:30]}
    probe_params = {"orgs": list(wanted), "seqs": list(wanted.values()), **pool}
    count_sql = (
        "SELECT COUNT(*) FROM tasks_task WHERE status = 'NOT_START' AND mode = %s "
        "AND is_test = %s AND submitted_at <= %s"
    )
    count_params = [task.mode, task.is_test, task.submitted_at]
    return {
        "tasks_ahead": ahead,
        "tenants_in_pool": len(snapshot),
        "estimate_ms": round(_stack.median(timings[1:]) or 0, 3),
        "snapshot_ms": round(
            _stack.median([execution_ms(selectors._snapshot_sql(), pool) for _ in range(11)][1:])
            or 0,
            3,
        ),
        "probe_ms": round(
            _stack.median(
                [execution_ms(selectors._probe_sql(), probe_params) for _ in range(11)][1:]
            )
            or 0,
            3,
        ),
        "count_ms_baseline": round(
            _stack.median([execution_ms(count_sql, count_params) for _ in range(6)][1:]) or 0, 3
        ),
    }


def main() -> int:
    args = parse_args()
    _stack.prepare("queue_position")
    results: list[dict[str, Any]] = []
    try:
        from apps.accounts.models import Organization
        from apps.accounts.provisioning import tenant_provision

        first = tenant_provision(email="queue@example.com", tier_code="PREMIUM", tokens=0)
        tier_id = Organization.objects.get(pk=first.organization.pk).tier_id
        orgs = Organization.objects.bulk_create(
            [Organization(name=f"queue-{i}", tier_id=tier_id) for i in range(args.tenants)]
        )
        state: dict[str, Any] = {"orgs": orgs, "queued": 0, "numbers": {}}
        for size in sorted(args.sizes):
            fill(size, state)
            results.append({"queued": size, **measure(args.samples)})
    finally:
        _stack.teardown(keep=args.keep)
    smallest, largest = results[0], results[-1]
    print(
        json.dumps(
            {
                "bench": "queue_position",
                "config": vars(args),
                "machine": _stack.machine(),
                "sizes": results,
                "flatness": round(largest["estimate_ms"] / (smallest["estimate_ms"] or 1), 3),
                "goal": {"flatness": "<= 1.5"},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
