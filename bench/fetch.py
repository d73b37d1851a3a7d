#!/usr/bin/env python
"""P3 (issue 15): fetch and list on a big task table, against a bare primary-key SELECT. JSON out.

    .venv/bin/python bench/fetch.py                          # 1,000,000 tasks / 1,000 organizations
    .venv/bin/python bench/fetch.py --tasks 100000 --organizations 100 --duration 5

The bulk loader makes ``--tasks`` finished imagine tasks (spread over ``--organizations``
tenants and 30 days) inside PostgreSQL from one template task (``INSERT … SELECT`` over
``generate_series``; columns from the Task model's own fields), then ANALYZEs. gunicorn (``--workers`` sync workers) serves mjgate and
a bare baseline view (bench/bare_app.py: one primary-key SELECT on the same table); ``wrk``
(16 connections) asks for random task ids of one tenant through ``GET /mj/task/{id}/fetch``,
and pages through ``GET /api/v1/tasks``. Rounds interleave baseline and mjgate.

Latency is reported twice: ``p50_ms``/``p99_ms`` as wrk sees it (with 16 connections on 4 sync
workers it includes the wait to be accepted, so it mostly measures throughput), and
``server_p50_ms``/``server_p99_ms``, each request's time inside a gunicorn worker (its access
log's ``%(D)s``) — the server latency issue 15's P3 goals are set on.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
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
    """Tenants, then the tasks. Returns the measured tenant's key and task ids.

    One task is made through the ORM (so every column has its model default) and PostgreSQL
    copies it ``--tasks`` times in one ``INSERT … SELECT`` over ``generate_series``, varying
    the id, tenant, prompt, result and times: a million rows in about a minute, and the
    columns follow the Task model's own fields.
    """
    from django.db import connection
    from django.utils import timezone

    from apps.accounts.models import Organization
    from apps.accounts.provisioning import tenant_provision
    from apps.tasks.enums import Action, Mode, Status
    from apps.tasks.models import Task

    measured = tenant_provision(email="bench@example.com", tier_code="PREMIUM", tokens=10**9)
    tier = measured.organization.tier
    Organization.objects.bulk_create(
        [Organization(name=f"bench org {i}", tier=tier) for i in range(args.organizations - 1)]
    )
    others = Organization.objects.exclude(pk=measured.organization.pk)
    organizations = [measured.organization.pk, *others.values_list("pk", flat=True)]
    now = timezone.now()
    template = Task.objects.create(
        organization=measured.organization,
        action=Action.IMAGINE,
        status=Status.SUCCESS,
        mode=Mode.FAST,
        progress=100,
        price=14_000,
        submitted_at=now,
        started_at=now,
        finished_at=now,
    )
    created = "(now() - make_interval(secs => mod(g.i::bigint * 7919, 30 * 86400)))"
    varied = {
        "id": f"(floor(extract(epoch FROM {created}) * 1000))::bigint::text"
        " || lpad(g.i::text, 7, '0')",
        "organization_id": "(%s::bigint[])[mod(g.i, %s) + 1]",
        "prompt": "'a bench prompt number ' || g.i || ' --ar 3:2'",
        "prompt_en": "'a bench prompt number ' || g.i || ' --ar 3:2'",
        "created_at": created,
        "submitted_at": created,
        "started_at": f"{created} + interval '2 seconds'",
        "finished_at": f"{created} + interval '40 seconds'",
        "updated_at": f"{created} + interval '40 seconds'",
        "result": "jsonb_build_object('grid', 'results/' || g.i || '/grid.png')",
    }
    quote = connection.ops.quote_name
    columns = [str(f.column) for f in Task._meta.concrete_fields]
    table = quote(Task._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
            f"SELECT {', '.join(varied.get(c, f't.{quote(c)}') for c in columns)} "
            f"FROM generate_series(0, %s) AS g(i), {table} AS t WHERE t.id = %s",
            [organizations, len(organizations), args.tasks - 2, template.pk],
        )
        cursor.execute(f"ANALYZE {table}")
    ids = list(Task.objects.filter(organization=measured.organization).values_list("pk", flat=True))
    return measured.issued_key.plaintext, ids


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
                "goal": {"fetch_server_p99_ms": "<= 10", "list_server_p99_ms": "<= 25"},
                "runs": runs,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
