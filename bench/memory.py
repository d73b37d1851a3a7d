#!/usr/bin/env python
"""P6 (issue 15): resident memory of the web and worker processes after real work. JSON out.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --requests 200 --tasks 30

Starts gunicorn (``--workers`` sync workers) on mjgate and on the bare baseline app, sends the
same mix to both (submits, fetches, lists for mjgate; inserts and primary-key selects for the
baseline), then reads each gunicorn worker's RSS from /proc. Starts a Celery worker with
``--concurrency`` prefork processes and beat, runs ``--tasks`` sandbox imagine tasks to the end,
and sums the RSS of the whole worker (parent + pool). Rounds repeat the measurement; medians out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
import submit as submit_bench


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--concurrency", type=int, default=4, help="celery prefork processes")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: shared pages (a forked pool shares the parent's) counted once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def traffic(port: int, key: str, count: int, bare: bool) -> None:
    import http.client

    ids: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "mj-api-secret": key,
        "Authorization": f"Bearer {key}",
    }
    for index in range(count):
        kind = index % 3
        if kind == 0 or not ids:
            body = json.dumps({"prompt": f"memory bench {index} --ar 3:2"})
            conn.request("POST", "/mj/submit/imagine", body=body, headers=headers)
            answer = json.loads(conn.getresponse().read())
            ids.append(str(answer.get("result")))
        elif kind == 1:
            path = f"/task/{ids[-1]}" if bare else f"/mj/task/{ids[-1]}/fetch"
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
        else:
            path = f"/task/{ids[0]}" if bare else "/api/v1/tasks?limit=50"
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()


def wait_done(count_before: int, tasks: int, timeout: float = 600) -> bool:
    from apps.tasks.enums import TERMINAL_STATUSES
    from apps.tasks.models import Task

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Task.objects.filter(status__in=TERMINAL_STATUSES).count() >= count_before + tasks:
            return True
        time.sleep(0.5)
    return False


def main() -> int:
    args = parse_args()
    env = _stack.prepare("memory", API_RATE_LIMIT=str(10**9), ALLOWED_HOSTS="*")
    rounds: list[dict[str, Any]] = []
    try:
        from apps.engines.services import upstream_account_create
        from apps.tasks.enums import TERMINAL_STATUSES
        from apps.tasks.models import Task

        key = submit_bench.setup()
        for index in range(3):
            upstream_account_create(
                engine="sandbox",
                name=f"memory-{index}",
                modes=["FAST", "RELAX", "TURBO"],
                concurrency=3,
                options={"duration": 1.0},
            )
        bare_port, app_port = submit_bench.free_port(), submit_bench.free_port()
        bare_env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent)}
        bare = submit_bench.gunicorn("bare_app:application", bare_port, args.workers, bare_env)
        app = submit_bench.gunicorn("config.wsgi:application", app_port, args.workers, env)
        submit_bench.wait_http(bare_port)
        submit_bench.wait_http(app_port)
        worker = _stack.start_worker(env, concurrency=args.concurrency)
        _stack.start_beat(env)
        for _ in range(args.rounds):
            traffic(bare_port, key, args.requests, bare=True)
            traffic(app_port, key, args.requests, bare=False)
            before = Task.objects.filter(status__in=TERMINAL_STATUSES).count()
            # The traffic above queued tasks too; wait for all of them.
            queued = Task.objects.exclude(status__in=TERMINAL_STATUSES).count()
            finished = wait_done(before, queued)
            web = [rss_mib(pid) for pid in children(app.pid)]
            bare_web = [rss_mib(pid) for pid in children(bare.pid)]
            celery_main = worker.pid
            pool = children(celery_main)
            rounds.append(
                {
                    "web_worker_rss_mib": {"max": max(web), "each": [round(v, 1) for v in web]},
                    "bare_web_worker_rss_mib": {"max": max(bare_web)},
                    "celery_worker_total_rss_mib": round(
                        rss_mib(celery_main) + sum(rss_mib(pid) for pid in pool), 1
                    ),
                    "celery_worker_total_pss_mib": round(
                        pss_mib(celery_main) + sum(pss_mib(pid) for pid in pool), 1
                    ),
                    "celery_processes": 1 + len(pool),
                    "celery_rss_mib_each": {
                        "parent": round(rss_mib(celery_main), 1),
                        "children": [round(rss_mib(pid), 1) for pid in pool],
                    },
                    "tasks_finished": finished,
                }
            )
    finally:
        _stack.teardown(keep=args.keep)
    print(
        json.dumps(
            {
                "bench": "memory",
                "config": vars(args),
                "machine": _stack.machine(),
                "median": {
                    "web_worker_rss_mib": _stack.median(
                        [r["web_worker_rss_mib"]["max"] for r in rounds]
                    ),
                    "bare_web_worker_rss_mib": _stack.median(
                        [r["bare_web_worker_rss_mib"]["max"] for r in rounds]
                    ),
                    "celery_worker_total_rss_mib": _stack.median(
                        [r["celery_worker_total_rss_mib"] for r in rounds]
                    ),
                    "celery_worker_total_pss_mib": _stack.median(
                        [r["celery_worker_total_pss_mib"] for r in rounds]
                    ),
                },
                "goal": {
                    "web_worker_rss_mib": "<= 143 (150 MB)",
                    "celery_4_process_mib": "<= 381 (400 MB)",
                },
                "rounds": rounds,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
