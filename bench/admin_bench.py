#!/usr/bin/env python
"""Benchmark the operator admin on a large task table (issue 9): prints JSON, asserts nothing.

    .venv/bin/python bench/admin_bench.py                  # 100,000 tasks, 7 runs per page
    .venv/bin/python bench/admin_bench.py --tasks 2000 --runs 2

It creates a separate PostgreSQL database (``--db-name``, dropped afterwards unless ``--keep``),
fills it with ``--tasks`` tasks spread over 30 days (denser in the last hour, the way a live
system looks), 200 organizations, six upstream accounts and a capture ledger entry per charged
success, runs ``ANALYZE``, and then times admin pages through Django's test client as a
superuser: the task changelist (plain, filtered, searched), a task page, the accounts list
and the stats page. Each page is fetched once to warm up, then ``--runs`` times; the JSON has
the median and every run in milliseconds, the number of queries and their total time, and a
budget per page with whether the median is within it.

The ledger rows are bulk-inserted for speed: they do not satisfy the ledger's invariants (there
are no holds), which is fine in a database that exists only for this measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Milliseconds per page that we consider acceptable on a developer machine (medians).
BUDGET_MS = {
    "task_changelist": 400,
    "task_changelist_filtered": 400,
    "task_search_id": 400,
    "task_search_prompt": 1500,
    "task_change": 400,
    "accounts_changelist": 600,
    "stats": 800,
    "stats_json": 800,
}


#: The key of the same-run baseline in ``measure``'s answer (moved out of the pages by the report).
BASELINE = "_baseline"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--organizations", type=int, default=200)
    parser.add_argument("--db-name", default=f"mjgate_bench_admin_{os.getpid()}")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--seed", type=int, default=20260110)
    return parser.parse_args(argv)


def setup_django(db_name: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    # The test settings pick PostgreSQL when it is reachable and take the database name from
    # here; create_test_db below creates (and later drops) exactly this database.
    os.environ["MJGATE_TEST_DB_NAME"] = db_name
    import django

    django.setup()


def seed(*, tasks: int, organizations: int, rng: random.Random) -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone

    from apps.accounts.models import MembershipTier, Organization
    from apps.billing.models import EntryKind, LedgerEntry
    from apps.engines.services import upstream_account_create
    from apps.tasks.enums import Mode, Status
    from apps.tasks.models import Task

    started = time.perf_counter()
    tier = MembershipTier.objects.get(code="FREE")
    orgs = Organization.objects.bulk_create(
        [Organization(name=f"Tenant {i:04d}", tier=tier) for i in range(organizations)]
    )
    accounts = [
        upstream_account_create(
            engine="sandbox",
            name=f"bench-{i}",
            modes=["FAST", "RELAX", "TURBO"] if i < 4 else ["RELAX"],
            concurrency=10,
            options={"duration": "5", "secret": f"bench-secret-{i}"},
        )
        for i in range(6)
    ]
    now = timezone.now()
    words = ["cat", "harbour", "neon", "forest", "castle", "robot", "sunset", "ink", "glass"]
    # A Zipf-like tenant mix: a few big tenants, a long tail.
    weights = [1 / (rank + 1) for rank in range(len(orgs))]
    prices = {Mode.FAST: 14_000, Mode.RELAX: 7_000, Mode.TURBO: 28_000}
    batch: list[Task] = []
    captures: list[LedgerEntry] = []
    recent = max(1, tasks // 50)  # about 2 % in the last hour
    created = 0
    for i in range(tasks):
        if i < recent:
            age = timedelta(seconds=rng.uniform(0, 3600))
        else:
            age = timedelta(seconds=rng.uniform(3600, 30 * 86400))
        created_at = now - age
        roll = rng.random()
        mode = Mode.FAST if roll < 0.6 else Mode.RELAX if roll < 0.9 else Mode.TURBO
        is_test = rng.random() < 0.05
        if i < 40:
            status = Status.NOT_START
        elif i < 70:
            status = Status.IN_PROGRESS
        else:
            outcome = rng.random()
            status = (
                Status.SUCCESS
                if outcome < 0.85
                else Status.FAILURE
                if outcome < 0.97
                else Status.CANCEL
            )
        account = None if status == Status.NOT_START else rng.choice(accounts)
        submitted_at = created_at
        started_at = (
            None
            if status == Status.NOT_START
            else created_at + timedelta(seconds=rng.uniform(0, 20))
        )
        finished_at = (
            started_at + timedelta(seconds=rng.uniform(10, 90))
            if status in (Status.SUCCESS, Status.FAILURE, Status.CANCEL) and started_at
            else None
        )
        org = rng.choices(orgs, weights=weights)[0]
        price = 0 if is_test else prices[mode]
        task = Task(
            id=f"{int(created_at.timestamp() * 1000)}{i % 1_000_000:06d}",
            organization=org,
            action="IMAGINE",
            status=status,
            mode=mode,
            is_test=is_test,
            prompt=f"{rng.choice(words)} {rng.choice(words)} study {i}",
            engine="" if account is None else account.engine,
            upstream_account=account,
            upstream_job_id="" if account is None else f"job{i:08d}",
            price=price,
            submitted_at=submitted_at,
            started_at=started_at,
            finished_at=finished_at,
            progress=100 if status == Status.SUCCESS else 0,
        )
        task.created_at = created_at
        batch.append(task)
        if status == Status.SUCCESS and price:
            captures.append(
                LedgerEntry(
                    organization=org,
                    kind=EntryKind.CAPTURE,
                    delta_available=0,
                    delta_held=-price,
                    available_after=0,
                    held_after=0,
                    idempotency_key=f"task:{task.id}:settle",
                    task_id=task.id,
                )
            )
        if len(batch) >= 5000:
            created += _flush(batch, captures)
    created += _flush(batch, captures)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "tasks": created,
        "organizations": len(orgs),
        "accounts": len(accounts),
        "capture_entries": LedgerEntry.objects.count(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _flush(batch: list[Any], captures: list[Any]) -> int:
    """Insert a batch. ``auto_now_add`` overwrites ``created_at`` on insert, so the intended
    times (the task's creation, the capture at the task's finish) are written back after."""
    from django.db import transaction

    from apps.billing.models import LedgerEntry
    from apps.tasks.models import Task

    if not batch:
        return 0
    stamps = {task.id: task.created_at for task in batch}
    finished = {task.id: task.finished_at for task in batch}
    with transaction.atomic():
        Task.objects.bulk_create(batch)
        for task in batch:
            task.created_at = stamps[task.id]
        Task.objects.bulk_update(batch, ["created_at"], batch_size=1000)
        if captures:
            made = LedgerEntry.objects.bulk_create(captures)
            for entry in made:
                entry.created_at = finished[entry.task_id]
            LedgerEntry.objects.bulk_update(made, ["created_at"], batch_size=1000)
    count = len(batch)
    batch.clear()
    captures.clear()
    return count


def measure(*, runs: int) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from apps.accounts.models import User
    from apps.tasks.enums import Status
    from apps.tasks.models import Task

    operator = User.objects.create_superuser(email="bench@example.com", password=None)
    client = Client()
    client.force_login(operator)
    some = Task.objects.filter(status=Status.FAILURE).order_by("pk").first() or Task.objects.first()
    assert some is not None
    tasks = reverse("admin:tasks_task_changelist")
    pages = {
        "task_changelist": (tasks, {}),
        "task_changelist_filtered": (
            tasks,
            {"status__exact": Status.FAILURE, "mode__exact": "FAST"},
        ),
        "task_search_id": (tasks, {"q": some.pk}),
        "task_search_prompt": (tasks, {"q": "harbour neon"}),
        "task_change": (reverse("admin:tasks_task_change", args=[some.pk]), {}),
        "accounts_changelist": (reverse("admin:engines_upstreamaccount_changelist"), {}),
        "stats": (reverse("admin:operator_stats"), {}),
        "stats_json": (reverse("admin:operator_stats"), {"format": "json"}),
    }

    def timed(url: str, params: dict[str, Any]) -> list[float]:
        # Timed without query capture: recording SQL adds its own cost to every statement.
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            response = client.get(url, params)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        return timings

    # The baseline, measured in the same run: Django's own admin index (no big table behind it).
    client.get(reverse("admin:index"))
    baseline = statistics.median(timed(reverse("admin:index"), {}))
    results: dict[str, Any] = {BASELINE: {"page": "admin index", "median_ms": round(baseline, 1)}}
    for name, (url, params) in pages.items():
        response = client.get(url, params)  # warm-up
        if response.status_code != 200:
            raise SystemExit(f"{name}: HTTP {response.status_code}")
        timings = timed(url, params)
        with CaptureQueriesContext(connection) as captured:  # a separate pass counts the SQL
            client.get(url, params)
        queries = captured.captured_queries
        median = statistics.median(timings)
        results[name] = {
            "median_ms": round(median, 1),
            "ratio_to_baseline": round(median / baseline, 2) if baseline else None,
            "runs_ms": [round(t, 1) for t in timings],
            "queries": len(queries),
            "query_ms": round(sum(float(q["time"]) for q in queries) * 1000, 1),
            "slowest_query_ms": round(
                max((float(q["time"]) for q in queries), default=0) * 1000, 1
            ),
            "budget_ms": BUDGET_MS[name],
            "within_budget": median <= BUDGET_MS[name],
        }
    return results


def build_report(*, seeded: dict[str, Any], pages: dict[str, Any], runs: int) -> dict[str, Any]:
    from django.db import connection

    pages = dict(pages)
    baseline = pages.pop(BASELINE, None)
    return {
        "benchmark": "operator admin",
        "database": connection.vendor,
        "seeded": seeded,
        "runs": runs,
        "baseline": baseline,
        "pages": pages,
        "budget_ms": BUDGET_MS,
        "within_budget": all(page["within_budget"] for page in pages.values()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(args.db_name)
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        print(json.dumps({"error": "the admin benchmark needs PostgreSQL"}))
        return 2
    # Timing a page, not the debug toolbar's idea of one.
    settings.DEBUG = False
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        rng = random.Random(args.seed)
        seeded = seed(tasks=args.tasks, organizations=args.organizations, rng=rng)
        pages = measure(runs=args.runs)
    finally:
        if not args.keep:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps(build_report(seeded=seeded, pages=pages, runs=args.runs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
