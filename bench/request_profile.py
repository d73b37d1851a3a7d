#!/usr/bin/env python
"""What one API request costs the web process (issue 15, P1 and P3), in one process. Prints JSON.

    .venv/bin/python bench/request_profile.py                       # submit, fetch, list
    .venv/bin/python bench/request_profile.py --requests 500 --profile submit

``bench/submit.py`` and ``bench/fetch.py`` measure throughput on a real stack, where a shared
machine's load decides the figures; this one measures what the load multiplies, with no HTTP
server in between: the WSGI application (``config.wsgi``) is called in a loop with the request
``wrk`` sends, and each kind of request reports this process's CPU milliseconds, its
PostgreSQL backend's CPU milliseconds (``/proc``; the server runs on this machine), SQL
statements and Python function calls (cProfile; a separate pass, as profiling slows the code) per
request. Compare two checkouts in the same minutes. ``--profile`` adds cProfile's top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

KINDS = ("fetch", "list", "submit")  # submit last: the reads see finished tasks only


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kinds", nargs="*", help=f"any of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per kind")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--tasks", type=int, default=2000, help="finished tasks the fetches pick from"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--dump", help="write each kind's cProfile stats to DUMP.<kind>")
    parser.add_argument(
        "--full-chain",
        action="store_true",
        help="also measure every kind through Django's own WSGIHandler (settings.MIDDLEWARE)",
    )
    parser.add_argument(
        "--unprepared",
        action="store_true",
        help="also measure every kind with DATABASE_PREPARED_STATEMENTS off (apps/core/db.py)",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.kinds = args.kinds or list(KINDS)
    if set(args.kinds) - set(KINDS):
        parser.error(f"kinds are {', '.join(KINDS)}")
    return args


def environ(method: str, path: str, key: str, body: bytes = b"") -> dict[str, Any]:
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_MJ_API_SECRET": key,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    return env


class Requests:
    """The n-th request of a kind, as the benches' wrk scripts send it."""

    def __init__(self, key: str, task_ids: list[str]) -> None:
        self.key = key
        self.task_ids = task_ids
        self.counter = 0

    def make(self, kind: str) -> dict[str, Any]:
        self.counter += 1
        if kind == "submit":
            body = json.dumps({"prompt": f"bench submit {self.counter} --ar 3:2"}).encode()
            return environ("POST", "/mj/submit/imagine", self.key, body)
        if kind == "fetch":
            task_id = self.task_ids[self.counter % len(self.task_ids)]
            return environ("GET", f"/mj/task/{task_id}/fetch", self.key)
        return environ("GET", "/api/v1/tasks?limit=20", self.key)


def call(application: Any, env: dict[str, Any]) -> int:
    status: list[str] = []

    def start_response(value: str, headers: list[Any], exc_info: Any = None) -> None:
        status.append(value)

    result = application(env, start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0])


def backend_cpu() -> float:
    from django.db import connection

    connection.ensure_connection()
    return _stack._cpu_seconds(connection.connection.info.backend_pid)


@dataclass
class Variant:
    """One way of serving the requests, measured interleaved with the others."""

    name: str
    application: Any
    prepared: bool = True
    cpu: float = 0.0
    pg: float = 0.0
    wall: float = 0.0

    def __enter__(self) -> Variant:
        from django.conf import settings

        settings.DATABASE_PREPARED_STATEMENTS = self.prepared
        return self

    def __exit__(self, *exc: object) -> None:
        from django.conf import settings

        settings.DATABASE_PREPARED_STATEMENTS = True


BLOCK = 50


def measure(
    variants: list[Variant], requests: Requests, kind: str, args: argparse.Namespace
) -> dict:
    """Each variant's figures for ``kind``: requests in blocks of :data:`BLOCK`, the variants
    taking turns, so a neighbour's load and the data's growth weigh on them alike."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    results: dict[str, dict[str, Any]] = {}
    statements: dict[str, int] = {}
    for variant in variants:
        variant.cpu = variant.pg = variant.wall = 0.0
        with variant:
            for _ in range(args.warmup):
                status = call(variant.application, requests.make(kind))
                assert status == 200, (kind, status)
            with CaptureQueriesContext(connection) as queries:
                call(variant.application, requests.make(kind))
            statements[variant.name] = len(queries.captured_queries)
    blocks = max(1, args.requests // BLOCK)
    for _ in range(blocks):
        for variant in variants:
            with variant:
                envs = [requests.make(kind) for _ in range(BLOCK)]
                pg, cpu, wall = backend_cpu(), time.process_time(), time.perf_counter()
                for env in envs:
                    call(variant.application, env)
                variant.cpu += time.process_time() - cpu
                variant.wall += time.perf_counter() - wall
                variant.pg += backend_cpu() - pg
    count = blocks * BLOCK
    for variant in variants:
        profile = cProfile.Profile(time.process_time)  # CPU, not waits
        with variant:
            envs = [requests.make(kind) for _ in range(min(args.requests, 200))]
            profile.enable()
            for env in envs:
                call(variant.application, env)
            profile.disable()
        stats = pstats.Stats(profile)
        if args.dump:
            stats.dump_stats(f"{args.dump}.{kind}_{variant.name}")
        result: dict[str, Any] = {
            "web_cpu_ms": round(variant.cpu * 1000 / count, 3),
            "postgres_cpu_ms": round(variant.pg * 1000 / count, 3),
            "wall_ms": round(variant.wall * 1000 / count, 3),
            "statements": statements[variant.name],
            "python_calls": round(stats.total_calls / len(envs)),  # type: ignore[attr-defined]
        }
        if args.profile:
            out = io.StringIO()
            stats.stream = out  # type: ignore[attr-defined]
            stats.sort_stats("cumulative").print_stats(args.top)
            out.write("\n")
            stats.sort_stats("tottime").print_stats(args.top)
            result["profile"] = out.getvalue().splitlines()
        name = kind if variant.name == "lean" else f"{kind}_{variant.name}"
        results[name] = result
    return results


def main() -> int:
    args = parse_args()
    _stack.prepare("reqprof", API_RATE_LIMIT=str(10**9), ALLOWED_HOSTS="*")
    try:
        import submit as submit_bench

        key = submit_bench.setup(accounts=10)
        from django.db import connections

        # One backend for the whole run, so its CPU counter covers every measured request.
        connections["default"].settings_dict["CONN_MAX_AGE"] = None
        connections["default"].close()  # the next connection takes the setting
        from config.wsgi import application

        requests = Requests(key, [])
        for _ in range(args.tasks):
            call(application, requests.make("submit"))
        from django.db import connection

        from apps.tasks.models import Task

        with connection.cursor() as cursor:  # finished, as bench/fetch.py loads them
            cursor.execute(
                "UPDATE tasks_task SET status = 'SUCCESS', progress = 100, started_at = now(),"
                " finished_at = now(), result = jsonb_build_object('grid', 'results/' || id"
                " || '/grid.png')"
            )
        requests.task_ids = [str(pk) for pk in Task.objects.values_list("pk", flat=True)]
        submit_bench.analyze()  # plans made over the filled tables, as in service
        kinds = [kind for kind in KINDS if kind in args.kinds]
        variants = [Variant("lean", application)]
        if args.unprepared:
            variants.append(Variant("unprepared", application, prepared=False))
        if args.full_chain:
            from django.core.handlers.wsgi import WSGIHandler

            variants.append(Variant("full_chain", WSGIHandler()))
        results: dict[str, Any] = {}
        for kind in kinds:
            results.update(measure(variants, requests, kind, args))
    finally:
        _stack.teardown(keep=args.keep)
    profiles = {kind: result.pop("profile", None) for kind, result in results.items()}
    print(json.dumps({"bench": "request_profile", "machine": _stack.machine(), **results}))
    for kind, lines in profiles.items():
        if lines:
            print(f"\n=== {kind}")
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
