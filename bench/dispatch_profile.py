#!/usr/bin/env python
"""Where a slot's time goes (issue 15, P2): the CPU the pipeline spends per task. Prints JSON.

    .venv/bin/python bench/dispatch_profile.py                 # 10 accounts x 3 slots, 300 tasks
    .venv/bin/python bench/dispatch_profile.py --top 40

``bench/dispatch.py`` measures utilisation on a real stack, where a shared machine's load decides
the figures; this one measures what the load multiplies: the CPU time (this process's, and
PostgreSQL's as ``pg_stat_statements`` is not assumed, the wall time of the statements) of each
step a task goes through while it holds or waits for a slot, run in one process without Celery
(every message the steps send still goes to Redis, as in production, and is dropped after):

- ``dispatch``: a pass of the dispatcher as the dispatch message runs it;
- ``start``: ``task_start`` of an assigned task (claim, sandbox submit, IN_PROGRESS);
- ``poll``: the poll step that finds the job done, frees the slot and hands it on (a dispatch
  pass and the first start it assigned, in the same process, as ``workers.poll_job`` does).

Sandbox jobs take 0 s here, so each poll finds its job done. ``--profile`` adds cProfile's
top functions by cumulative time over the whole run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
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
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--profile-out", help="also write the cProfile stats to this file")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


class Meter:
    """CPU and wall time and SQL statements per step kind."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.statements: dict[str, int] = defaultdict(int)
        self._queries = 0

    def __call__(self, kind: str, step: Any) -> Any:
        from django.db import connection

        counter = {"n": 0}

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            counter["n"] += 1
            return execute(sql, params, many, context)

        cpu, wall = time.process_time(), time.perf_counter()
        with connection.execute_wrapper(count):
            result = step()
        self.cpu[kind] += time.process_time() - cpu
        self.wall[kind] += time.perf_counter() - wall
        self.count[kind] += 1
        self.statements[kind] += counter["n"]
        return result

    def report(self) -> dict[str, Any]:
        return {
            kind: {
                "steps": self.count[kind],
                "cpu_ms_per_step": round(1000 * self.cpu[kind] / self.count[kind], 2),
                "wall_ms_per_step": round(1000 * self.wall[kind] / self.count[kind], 2),
                "statements_per_step": round(self.statements[kind] / self.count[kind], 1),
            }
            for kind in sorted(self.count)
        }


def setup(args: argparse.Namespace) -> list[str]:
    from apps.accounts.provisioning import tenant_provision
    from apps.engines.services import upstream_account_create

    for index in range(args.accounts):
        upstream_account_create(
            engine="sandbox",
            name=f"profile-{index}",
            modes=["FAST", "RELAX", "TURBO"],
            concurrency=args.slots,
            queue_size=0,
            options={"duration": 0},
        )
    tenants = max(1, math.ceil(args.tasks / 40))
    return [
        tenant_provision(
            email=f"profile{index}@example.com", tier_code="PREMIUM", tokens=10**10
        ).issued_key.plaintext
        for index in range(tenants)
    ]


def submit(keys: list[str], count: int) -> list[str]:
    from django.test import Client

    client = Client()
    ids = []
    for index in range(count):
        response = client.post(
            "/mj/submit/imagine",
            data=json.dumps({"prompt": f"profile task {index} --v 6"}),
            content_type="application/json",
            HTTP_MJ_API_SECRET=keys[index % len(keys)],
        )
        ids.append(str(response.json()["result"]))
    return ids


def run(ids: list[str], meter: Meter) -> int:
    """Drive every task through dispatch, start and poll in this process. Returns the passes."""
    from apps.tasks.enums import Status
    from apps.tasks.lifecycle import task_start
    from apps.tasks.models import Task
    from apps.tasks.scheduling import dispatch_run, poll_step

    def startable() -> list[str]:
        return list(
            Task.objects.filter(
                pk__in=ids, status=Status.SUBMITTED, submit_claimed_at__isnull=True
            ).values_list("pk", flat=True)
        )

    def pollable() -> list[tuple[str, str]]:
        return list(
            Task.objects.filter(
                pk__in=ids, status=Status.IN_PROGRESS, slot_freed_at__isnull=True
            ).values_list("pk", "poll_token")
        )

    meter("dispatch", dispatch_run)
    passes = 0
    while True:
        passes += 1
        for task_id in startable():
            meter("start", lambda task_id=task_id: task_start(task_id=task_id))
        running = pollable()
        if not running:
            break
        for task_id, token in running:
            # Once the queue is empty the step would store the result itself: not slot work.
            if not Task.objects.filter(pk__in=ids, status=Status.NOT_START).exists():
                return passes
            meter("poll", lambda t=task_id, k=token: poll_step(task_id=t, token=k))
    return passes


def main() -> int:
    args = parse_args()
    _stack.prepare("dispatchprofile")
    profile: str | None = None
    calls = 0
    try:
        keys = setup(args)
        ids = submit(keys, args.tasks)
        meter = Meter()
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        if profiler:
            profiler.enable()
        passes = run(ids, meter)
        if profiler:
            profiler.disable()
            calls = pstats.Stats(profiler).total_calls
            if args.profile_out:
                profiler.dump_stats(args.profile_out)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
            profile = out.getvalue()
    finally:
        _stack.teardown(keep=args.keep)
    steps = meter.report()
    per_task = sum(
        meter.cpu[kind] for kind in ("dispatch", "start", "poll") if kind in meter.cpu
    ) / max(1, meter.count.get("poll", 0))
    print(
        json.dumps(
            {
                "bench": "dispatch_profile",
                "config": vars(args),
                "machine": _stack.machine(),
                "passes": passes,
                "steps": steps,
                "cpu_ms_per_task_cycle": round(1000 * per_task, 2),
                # With --profile: Python function calls per task, a measure of the work done
                # that a busy machine does not change (cProfile slows the CPU figures).
                "python_calls_per_task": round(calls / len(ids)) if calls else None,
            },
            indent=2,
        )
    )
    if profile:
        print(profile, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
