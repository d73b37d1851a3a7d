#!/usr/bin/env python
"""P3 (issue 15): fetch and list on a big task table, against a bare primary-key SELECT. JSON out.

    .venv/bin/python bench/fetch.py                          # 1,000,000 tasks / 1,000 organizations
    .venv/bin/python bench/fetch.py --tasks 100000 --organizations 100 --duration 5

The bulk loader COPYs ``--tasks`` finished imagine tasks (spread over ``--organizations``
tenants and 30 days) straight into PostgreSQL, built from the Task model's own fields so it
follows schema changes, then ANALYZEs. gunicorn (``--workers`` sync workers) serves mjgate and
a bare baseline view (bench/bare_app.py: one primary-key SELECT on the same table); ``wrk``
(16 connections) asks for random task ids of one tenant through ``GET /mj/task/{id}/fetch``,
and pages through ``GET /api/v1/tasks``. Rounds interleave baseline and mjgate.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
import submit as submit_bench

FETCH_LUA = """
ids = {%(ids)s}
wrk.headers["mj-api-secret"] = "%(key)s"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  return wrk.format("GET", "%(prefix)s" .. ids[math.random(#ids)] .. "%(suffix)s")
end
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--organizations", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--timeout", type=int, default=30, help="wrk's per-request timeout, s")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def load(args: argparse.Namespace) -> tuple[str, list[str]]:
    """Tenants, then the tasks by COPY. Returns the measured tenant's key and task ids."""
    from django.db import connection
    from django.utils import timezone

    from apps.accounts.models import Organization
    from apps.accounts.provisioning import tenant_provision
    from apps.tasks.enums import Action, Mode, Status
    from apps.tasks.models import Task

    measured = tenant_provision(email="bench@example.com", tier_code="PREMIUM", tokens=10**9)
    organizations = [measured.organization.pk]
    tier = measured.organization.tier
    Organization.objects.bulk_create(
        [Organization(name=f"bench org {i}", tier=tier) for i in range(args.organizations - 1)]
    )
    organizations += list(
        Organization.objects.exclude(pk=measured.organization.pk).values_list("pk", flat=True)
    )
    fields = list(Task._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    now = timezone.now()
    rng = random.Random(20261204)
    measured_ids: list[str] = []
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {Task._meta.db_table} ({columns}) FROM STDIN") as copy:
            for index in range(args.tasks):
                organization = organizations[index % len(organizations)]
                created = now - timedelta(seconds=rng.randint(0, 30 * 86400))
                task = Task(
                    id=f"{int(created.timestamp() * 1000)}{index:07d}",
                    organization_id=organization,
                    action=Action.IMAGINE,
                    status=Status.SUCCESS,
                    mode=Mode.FAST,
                    prompt=f"a bench prompt number {index} --ar 3:2",
                    prompt_en=f"a bench prompt number {index} --ar 3:2",
                    progress=100,
                    price=14_000,
                    created_at=created,
                    submitted_at=created,
                    started_at=created + timedelta(seconds=2),
                    finished_at=created + timedelta(seconds=40),
                    updated_at=created + timedelta(seconds=40),
                    result={"grid": f"results/{index}/grid.png"},
                )
                copy.write_row(
                    [f.get_db_prep_save(getattr(task, f.attname), connection) for f in fields]
                )
                if organization == measured.organization.pk:
                    measured_ids.append(task.id)
        cursor.execute(f"ANALYZE {Task._meta.db_table}")
    return measured.issued_key.plaintext, measured_ids


def main() -> int:
    args = parse_args()
    wrk = submit_bench.ensure_wrk()
    env = _stack.prepare("fetch", API_RATE_LIMIT=str(10**9), ALLOWED_HOSTS="*")
    runs: dict[str, list[dict[str, Any]]] = {"bare_pk_select": [], "fetch": [], "list": []}
    try:
        key, ids = load(args)
        sample = random.Random(1).sample(ids, min(len(ids), 500))
        quoted = ", ".join(f'"{i}"' for i in sample)
        scripts = Path(tempfile.mkdtemp())
        fetch_lua = scripts / "fetch.lua"
        fetch_lua.write_text(
            FETCH_LUA % {"ids": quoted, "key": key, "prefix": "/mj/task/", "suffix": "/fetch"}
        )
        bare_lua = scripts / "bare.lua"
        bare_lua.write_text(
            FETCH_LUA % {"ids": quoted, "key": key, "prefix": "/task/", "suffix": ""}
        )
        list_lua = scripts / "list.lua"
        list_lua.write_text(
            FETCH_LUA % {"ids": '"20"', "key": key, "prefix": "/api/v1/tasks?limit=", "suffix": ""}
        )
        (bare_port, bare_meter), (app_port, app_meter) = submit_bench.serve_both(env, args)
        plan = (
            ("bare_pk_select", bare_port, bare_lua, bare_meter),
            ("fetch", app_port, fetch_lua, app_meter),
            ("list", app_port, list_lua, app_meter),
        )
        headers = {"mj-api-secret": key, "Authorization": f"Bearer {key}"}
        submit_bench.warm_up(bare_port, f"/task/{ids[0]}", headers, None, args.workers * 3)
        submit_bench.warm_up(app_port, f"/mj/task/{ids[0]}/fetch", headers, None, args.workers * 3)
        short = argparse.Namespace(**{**vars(args), "duration": 2})
        for _, port, script, _ in plan:
            submit_bench.run_wrk(wrk, port, script, short, path="")
        for _ in range(args.rounds):
            for name, port, script, meter in plan:
                runs[name].append(
                    submit_bench.run_wrk(wrk, port, script, args, path="", meter=meter)
                )
    finally:
        _stack.teardown(keep=args.keep)
    medians = submit_bench.summarize(runs)
    bare = medians["bare_pk_select"]
    print(
        json.dumps(
            {
                "bench": "fetch",
                "config": vars(args),
                "machine": _stack.machine(),
                "median": medians,
                "ratio_cpu_bare_over_mjgate": {
                    name: submit_bench.ratio(
                        (bare["web_cpu_ms"] or 0) + (bare["postgres_cpu_ms"] or 0),
                        (medians[name]["web_cpu_ms"] or 0)
                        + (medians[name]["postgres_cpu_ms"] or 0),
                    )
                    for name in ("fetch", "list")
                },
                "goal": {"fetch_p99_ms": "<= 10", "list_p99_ms": "<= 25"},
                "runs": runs,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
