#!/usr/bin/env python
"""P2 (issue 15): how busy the dispatcher keeps upstream slots. Prints JSON; asserts nothing.

    .venv/bin/python bench/dispatch.py                      # 10 accounts x 3 slots, 600 tasks of 1 s, 3 rounds
    .venv/bin/python bench/dispatch.py --tasks 120 --rounds 1

Each round fills the queue with ``--tasks`` imagine tasks through the mj-proxy API (12+ tenants on
the top tier, so tier limits never hold work back) while no worker runs, then starts a
low-priority results worker (``--results-concurrency``, as compose runs it) and beat, and once
they have booted a Celery worker (``--concurrency`` prefork processes) for engine jobs, on the
local settings (PostgreSQL + Redis), and waits until every task is terminal (the services of a
deployment are long running: their start-up is kept out of the measured window). From the
tasks' own timestamps it reports:

- ``utilisation``: the ideal makespan (tasks x duration / slots, the baseline this run computes
  for itself) over the measured one (first claim -> last slot freed, ``slot_freed_at``: the
  moment the upstream said done; the result is stored after that, off the slot);
- ``free_to_start_ms``: per account, the i-th slot freed to the (i+slots)-th claim on that
  account, p50/p99 — how long a free slot waited for work while work was queued;
- ``stored_after_free_ms``: slot freed -> SUCCESS (the results queue's lag), for the record;
- ``claim_to_upstream_ms`` and ``done_to_freed_ms``: where a cycle's time goes besides the job
  (the submit; the poll's lateness, the run's first second apart: its polls come due at once);
- ``worker_cpu_ms_per_task``: the engine worker's CPU time (all its processes) per task — the
  work a busy machine's load multiplies into slot time (``bench/dispatch_profile.py`` breaks
  it down by step, without Celery).

``--slots-only`` ends a round once every slot is freed, without waiting for the results queue.

``--pick-queued N`` (default 100,000; 0 skips it) also times the dispatcher's fair pick with N
tasks queued across ``--pick-tenants`` tenants (30 free slots, after VACUUM ANALYZE as
autovacuum would leave the table): the dispatcher's pick (the tenants' heads, then the oldest
tasks of the tenants the free slots reach: two statements, their server-side execution times
from EXPLAIN ANALYZE summed, and the whole pick's wall time in the bench process), the
per-tenant LATERAL pick it replaced, and as the baseline the portable window query that one
replaced (medians of 20).

Medians over rounds, and the load average, go with the figures: only ratios are comparable
between machines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--slots", type=int, default=3, help="concurrency of each account")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per sandbox job")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--results-concurrency", type=int, default=2)
    parser.add_argument("--pick-queued", type=int, default=100_000)
    parser.add_argument("--pick-tenants", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per round")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--slots-only",
        action="store_true",
        help="end a round when every slot is freed, without waiting for the stored results "
        "(stored_after_free_ms then covers the results stored by then)",
    )
    return parser.parse_args()


def setup(args: argparse.Namespace) -> list[str]:
    from apps.accounts.provisioning import tenant_provision
    from apps.engines.services import upstream_account_create

    for index in range(args.accounts):
        upstream_account_create(
            engine="sandbox",
            name=f"bench-{index}",
            modes=["FAST", "RELAX", "TURBO"],
            concurrency=args.slots,
            queue_size=0,
            options={"duration": args.duration},
        )
    tenants = max(1, math.ceil(args.tasks / 40))
    return [
        tenant_provision(
            email=f"bench{index}@example.com", tier_code="PREMIUM", tokens=10**10
        ).issued_key.plaintext
        for index in range(tenants)
    ]


def submit(keys: list[str], count: int, round_no: int) -> list[str]:
    from django.test import Client

    client = Client()
    ids: list[str] = []
    for index in range(count):
        key = keys[index % len(keys)]
        response = client.post(
            "/mj/submit/imagine",
            data=json.dumps({"prompt": f"bench round {round_no} task {index} --v 6"}),
            content_type="application/json",
            HTTP_MJ_API_SECRET=key,
        )
        body = response.json()
        if body.get("code") not in (1, 22):
            raise SystemExit(f"submit refused: {response.status_code} {body}")
        ids.append(str(body["result"]))
    return ids


def measure(ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from apps.tasks.enums import Status
    from apps.tasks.models import Task

    rows = list(
        Task.objects.filter(pk__in=ids).values(
            "status", "upstream_account_id", "submit_claimed_at", "finished_at", "slot_freed_at"
        )
    )
    for row in rows:
        # The slot is free from the upstream's "done" (or from the end, for a failed task).
        row["freed"] = row["slot_freed_at"] or row["finished_at"]
    done = [r for r in rows if r["status"] == Status.SUCCESS]
    claimed = [r for r in rows if r["submit_claimed_at"] and r["freed"]]
    first = min(r["submit_claimed_at"] for r in claimed)
    last = max(r["freed"] for r in claimed)
    lag = [
        (r["finished_at"] - r["slot_freed_at"]).total_seconds() * 1000
        for r in done
        if r["slot_freed_at"]
    ]
    makespan = (last - first).total_seconds()
    slots = args.accounts * args.slots
    ideal = len(ids) * args.duration / slots
    gaps: list[float] = []
    by_account: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in claimed:
        by_account[row["upstream_account_id"]].append(row)
    for account_rows in by_account.values():
        starts = sorted(r["submit_claimed_at"] for r in account_rows)
        frees = sorted(r["freed"] for r in account_rows)
        for i, freed in enumerate(frees):
            if i + args.slots < len(starts):
                gaps.append(max(0.0, (starts[i + args.slots] - freed).total_seconds() * 1000))
    return {
        "tasks": len(ids),
        "succeeded": len(done),
        "statuses": {
            s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}
        },
        "makespan_s": round(makespan, 3),
        "ideal_makespan_s": round(ideal, 3),
        "utilisation": round(ideal / makespan, 4) if makespan else None,
        "free_to_start_ms": {
            "p50": _round(_stack.percentile(gaps, 0.5)),
            "p99": _round(_stack.percentile(gaps, 0.99)),
            "max": _round(max(gaps) if gaps else None),
            "samples": len(gaps),
        },
        "stored_after_free_ms": {
            "p50": _round(_stack.percentile(lag, 0.5)),
            "p99": _round(_stack.percentile(lag, 0.99)),
        },
        **cycle_breakdown(ids),
    }


def cycle_breakdown(ids: list[str]) -> dict[str, Any]:
    """Where each job's cycle loses time, from the sandbox's own record of the job (its
    ``created_at``: when the upstream took it; done ``duration`` later):

    - ``claim_to_upstream_ms``: the claim -> the upstream has the job (the submit);
    - ``done_to_freed_ms``: the job done upstream -> its slot freed (the poll's lateness),
      for the jobs of the run's first second (whose polls all come due together) and the rest.
    """
    from datetime import timedelta

    from apps.engines.models import SandboxJob
    from apps.tasks.models import Task

    tasks = {
        row["pk"]: row
        for row in Task.objects.filter(pk__in=ids, slot_freed_at__isnull=False).values(
            "pk", "submit_claimed_at", "slot_freed_at"
        )
    }
    jobs = list(
        SandboxJob.objects.filter(task_id__in=list(tasks)).values(
            "task_id", "created_at", "duration"
        )
    )
    if not jobs:
        return {}
    first = min(job["created_at"] for job in jobs)
    submit: list[float] = []
    late_first: list[float] = []
    late_rest: list[float] = []
    for job in jobs:
        task = tasks[job["task_id"]]
        if task["submit_claimed_at"]:
            submit.append((job["created_at"] - task["submit_claimed_at"]).total_seconds() * 1000)
        done = job["created_at"] + timedelta(seconds=job["duration"])
        late = (task["slot_freed_at"] - done).total_seconds() * 1000
        (late_first if job["created_at"] - first < timedelta(seconds=1) else late_rest).append(late)

    def spread(values: list[float]) -> dict[str, Any]:
        return {
            "p50": _round(_stack.percentile(values, 0.5)),
            "p99": _round(_stack.percentile(values, 0.99)),
            "max": _round(max(values) if values else None),
            "samples": len(values),
        }

    return {
        "claim_to_upstream_ms": spread(submit),
        "done_to_freed_ms": {"first_second": spread(late_first), "after": spread(late_rest)},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def wait_terminal(ids: list[str], timeout: float, *, slots_only: bool = False) -> bool:
    from apps.tasks.enums import TERMINAL_STATUSES
    from apps.tasks.models import Task

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = Task.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_STATUSES)
        if slots_only:  # the upstream part is over; results may still be on their way
            left = left.filter(slot_freed_at__isnull=True)
        left = left.count()
        if not left:
            return True
        time.sleep(0.5)
    return False


def pick_query(queued: int, tenants: int) -> dict[str, Any]:
    """Time the fair pick with ``queued`` tasks waiting (``tenants`` of them), against the window
    query it replaced; EXPLAIN ANALYZE's execution time, median of 20 after a warm-up."""
    from django.db import connection
    from django.utils import timezone

    from apps.accounts.models import Organization
    from apps.accounts.provisioning import tenant_provision
    from apps.tasks.enums import Mode, Status
    from apps.tasks.models import Task
    from apps.tasks.scheduling import lateral_pick_sql

    tier = tenant_provision(email="pick@example.com", tier_code="PREMIUM", tokens=0)
    tier_id = Organization.objects.get(pk=tier.organization.pk).tier_id
    orgs = Organization.objects.bulk_create(
        [Organization(name=f"pick-{i}", tier_id=tier_id) for i in range(tenants)]
    )
    start = timezone.now()
    modes = [Mode.FAST, Mode.FAST, Mode.RELAX]
    batch: list[Task] = []
    for index in range(queued):
        batch.append(
            Task(
                id=f"77{index:012d}",
                organization_id=orgs[index % len(orgs)].pk,
                action="IMAGINE",
                mode=modes[index % 3],
                status=Status.NOT_START,
                prompt="pick",
                prompt_en="pick",
                submitted_at=start,
            )
        )
        if len(batch) == 5000:
            Task.objects.bulk_create(batch)
            batch = []
    if batch:
        Task.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        # What autovacuum keeps true of a live table: statistics, and a visibility map that
        # lets the pick read the partial index alone.
        cursor.execute("VACUUM ANALYZE tasks_task")

    jit: dict[str, bool] = {}

    def execution_ms(sql: str, params: list[Any]) -> float:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0][0]
            jit[sql[:40]] = "JIT" in plan
            return float(plan["Execution Time"])

    # What free slots of shared accounts take: shared and own-then-shared tasks of each mode.
    pools = [
        (False, mode.value, pool, None)
        for mode in (Mode.FAST, Mode.RELAX, Mode.TURBO)
        for pool in ("shared", "own_then_shared")
    ]
    lateral_sql, lateral_params = lateral_pick_sql(pools, 30)
    window_sql, window_params = _window_sql(pools)
    lateral = [execution_ms(lateral_sql, lateral_params) for _ in range(21)][1:]
    window = [execution_ms(window_sql, window_params) for _ in range(6)][1:]
    fair = {free: _fair_pick_ms(set(pools), free, execution_ms) for free in (30, 1)}
    return {
        "queued": queued,
        "tenants": len(orgs),
        "free_slots": 30,
        # The dispatcher's pick: the tenants' heads, then the reached tenants' oldest tasks
        # (two statements; server execution summed, and the whole pick as the worker sees it).
        "pick_ms": fair[30]["server_ms"],
        "pick_client_ms": fair[30]["client_ms"],
        "pick_candidates": fair[30]["candidates"],
        "pick_one_free_slot_ms": fair[1]["server_ms"],
        "pick_one_free_slot_client_ms": fair[1]["client_ms"],
        "lateral_ms": round(_stack.median(lateral) or 0, 3),
        "window_ms_baseline": round(_stack.median(window) or 0, 3),
        "ratio": round(fair[30]["server_ms"] / (_stack.median(window) or 1), 4),
        "jit_compiled": sorted(jit.values()),
        "goal_ms": "<= 5",
    }


def _fair_pick_ms(pools: set[Any], free: int, execution_ms: Any) -> dict[str, Any]:
    """The dispatcher's fair pick with ``free`` slots of one shared account: the server
    execution time of its statements (summed, median of 20) and its wall time in this process
    (statements, round trips and Python)."""
    from django.db import connection

    from apps.engines.models import UpstreamAccount
    from apps.tasks.scheduling import _queued_candidates_fair, _Slot

    modes = ["FAST", "RELAX", "TURBO"]
    account = UpstreamAccount(pk=1, is_sandbox_pool=False, owner_id=None, modes=modes)
    slots = {1: _Slot(account, free, 0, modes)}
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        candidates = len(_queued_candidates_fair(slots, pools).ids)
    server = [sum(execution_ms(sql, params) for sql, params in statements) for _ in range(21)]
    client = []
    for _ in range(21):
        began = time.perf_counter()
        _queued_candidates_fair(slots, pools)
        client.append(1000 * (time.perf_counter() - began))
    return {
        "server_ms": round(_stack.median(server[1:]) or 0, 3),
        "client_ms": round(_stack.median(client[1:]) or 0, 3),
        "candidates": candidates,
    }


def _window_sql(pools: list[tuple[bool, str, str, int | None]]) -> tuple[str, list[Any]]:
    """The SQL of the portable window pick (what ran on PostgreSQL before the LATERAL one)."""
    from django.db.models import F, Q, Window
    from django.db.models.functions import RowNumber

    from apps.tasks.enums import Status
    from apps.tasks.models import Task

    modes = sorted({pool[1] for pool in pools})
    ranked = (
        Task.objects.filter(Q(is_test=False, mode__in=modes), status=Status.NOT_START)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("organization_id")],
                order_by=[F("submitted_at").asc(), F("pk").asc()],
            )
        )
        .filter(rank__lte=30)
        .order_by("rank", "submitted_at", "pk")
        .values_list("pk", flat=True)[:500]
    )
    sql, params = ranked.query.sql_with_params()
    return sql, list(params)


def main() -> int:
    args = parse_args()
    env = _stack.prepare("dispatch")
    rounds: list[dict[str, Any]] = []
    try:
        keys = setup(args)
        for round_no in range(args.rounds):
            ids = submit(keys, args.tasks, round_no)
            # The results worker and beat first, booted before the engine worker starts: the
            # measured window (from the first claim) holds the services at work, not their
            # start-up beside it (a deployment's services are long running).
            results = _stack.start_results_worker(env, concurrency=args.results_concurrency)
            beat = _stack.start_beat(env)
            _stack.wait_booted(results, children=args.results_concurrency)
            _stack.wait_booted(beat, path=_stack.beat_schedule_path())
            worker = _stack.start_worker(
                env, concurrency=args.concurrency, queues=env["CELERY_TASK_DEFAULT_QUEUE"]
            )
            finished = wait_terminal(ids, args.timeout, slots_only=args.slots_only)
            cpu = _stack.session_cpu_seconds(worker)
            load = _stack.machine()["loadavg"]
            _stack.stop_children()
            result = measure(ids, args)
            result["finished_in_time"] = finished
            # The engine worker's CPU (starts, polls, dispatch passes; results are the results
            # worker's), per task: what the machine's load multiplies into slot time.
            result["worker_cpu_ms_per_task"] = round(1000 * cpu / len(ids), 1)
            result["loadavg_at_end"] = load
            rounds.append(result)
        pick = pick_query(args.pick_queued, args.pick_tenants) if args.pick_queued else None
    finally:
        _stack.teardown(keep=args.keep)
    utilisation = [r["utilisation"] for r in rounds if r["utilisation"] is not None]
    p99 = [r["free_to_start_ms"]["p99"] for r in rounds if r["free_to_start_ms"]["p99"] is not None]
    cpu = [r["worker_cpu_ms_per_task"] for r in rounds]
    print(
        json.dumps(
            {
                "bench": "dispatch",
                "config": vars(args),
                "machine": _stack.machine(),
                "median": {
                    "utilisation": _stack.median(utilisation),
                    "free_to_start_p99_ms": _stack.median(p99),
                    "worker_cpu_ms_per_task": _stack.median(cpu),
                },
                "goal": {"utilisation": ">= 0.97", "free_to_start_p99_ms": "<= 200"},
                "rounds": rounds,
                "fair_pick": pick,
            },
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
