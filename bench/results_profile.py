#!/usr/bin/env python
"""What making a result costs (issue 15, P5/P2): CPU and SQL per finishing step. Prints JSON.

    .venv/bin/python bench/results_profile.py                 # 60 sandbox imagine tasks
    .venv/bin/python bench/results_profile.py --tasks 100 --profile

``bench/e2e.py`` and ``bench/dispatch.py`` time results on a real stack, where the machine's
load decides the figures; this one measures what the load multiplies, in one process without
Celery (messages still go to Redis and are dropped after): every task is driven until the
upstream is done and its slot freed, then

- ``finish``: ``lifecycle.task_finish``, the results queue's step up to SUCCESS (the sandbox's
  render, storing, the SUCCESS transaction and its events);
- ``derive``: ``lifecycle.task_derive_files``, the low-priority step after SUCCESS that makes
  the thumbnails and splits (absent from checkouts that made them inside ``finish``).

Run it in two checkouts in the same minutes to compare them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
from dispatch_profile import Meter, setup, submit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def drive_to_freed(ids: list[str]) -> None:
    """Dispatch, start and poll every task until each one's upstream is done (slot freed)."""
    from apps.tasks.enums import Status
    from apps.tasks.lifecycle import task_start
    from apps.tasks.models import Task
    from apps.tasks.scheduling import dispatch_run, poll_step

    for _ in range(10 * len(ids)):
        dispatch_run()
        for task_id in Task.objects.filter(
            pk__in=ids, status=Status.SUBMITTED, submit_claimed_at__isnull=True
        ).values_list("pk", flat=True):
            task_start(task_id=task_id)
        running = list(
            Task.objects.filter(
                pk__in=ids, status=Status.IN_PROGRESS, slot_freed_at__isnull=True
            ).values_list("pk", "poll_token")
        )
        for task_id, token in running:
            poll_step(task_id=task_id, token=token)
        if (
            not running
            and not Task.objects.filter(
                pk__in=ids, status__in=(Status.NOT_START, Status.SUBMITTED)
            ).exists()
        ):
            return
    raise RuntimeError("tasks did not all reach the results queue")


def main() -> int:
    args = parse_args()
    _stack.prepare("resultsprofile")
    profile = None
    try:
        keys = setup(args)
        ids = submit(keys, args.tasks)
        drive_to_freed(ids)
        from apps.tasks import lifecycle
        from apps.tasks.enums import Status
        from apps.tasks.models import Task

        meter = Meter()
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        if profiler:
            profiler.enable()
        for task_id, token in Task.objects.filter(
            pk__in=ids, status=Status.IN_PROGRESS, slot_freed_at__isnull=False
        ).values_list("pk", "poll_token"):
            meter("finish", lambda t=task_id, k=token: lifecycle.task_finish(task_id=t, token=k))
        derive = getattr(lifecycle, "task_derive_files", None)
        if derive is not None:
            for task_id in ids:
                meter("derive", lambda t=task_id: derive(task_id=t))
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
            profile = out.getvalue()
        succeeded = Task.objects.filter(pk__in=ids, status=Status.SUCCESS).count()
    finally:
        _stack.teardown(keep=args.keep)
    print(
        json.dumps(
            {
                "bench": "results_profile",
                "config": vars(args),
                "machine": _stack.machine(),
                "succeeded": succeeded,
                "steps": meter.report(),
            },
            indent=2,
        )
    )
    if profile:
        print(profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
