#!/usr/bin/env python
"""P1 (issue 15): the cost of ``POST /mj/submit/imagine`` against a bare INSERT. Prints JSON.

    .venv/bin/python bench/submit.py                # 32 connections, 10 s per run, 3 rounds
    .venv/bin/python bench/submit.py --duration 5 --rounds 2

Both servers run under gunicorn with ``--workers`` sync workers on the same PostgreSQL; the load
comes from ``wrk`` (Debian's package; installed by this script when missing). Rounds interleave
bare and mjgate runs so a busy neighbour affects both alike; the JSON reports each run's
requests per second and latency percentiles, the medians, and the ratio mjgate/bare.
Also counted in-process: SQL statements of one submit (``CaptureQueriesContext``).

No worker runs, so the submitted tasks stay queued: the queue grows during the run, the way it
does under a burst. The pool has ``--accounts`` sandbox accounts of 3 slots (none runs, so the
first submits are told they start and the rest that they queue, as in production under a
burst). The tenant sits on a tier without a practical limit and the per-key rate limit is
lifted, so every request takes the full accept path rather than a refusal.

Requests per second swing with whatever else the machine runs; the CPU each request costs does
much less, so each run also reports CPU milliseconds per request of the gunicorn workers and
of their PostgreSQL backends (read from /proc; PostgreSQL must run on this machine), and the
ratios mjgate/bare of both. ``wrk`` waits up to ``--timeout`` seconds for an answer, so slow
answers count in the percentiles instead of vanishing as socket timeouts. Each gunicorn worker
answers some requests before the measured runs (its first request loads the URLconf).

``--floor`` adds a third series in the same rounds: the bare app (no middleware, no
authentication, no validation, no dispatch kick) running only mjgate's acceptance statement,
``tasks_task_accept`` (the organization's lock and tier limit, the queue number, the task's
INSERT and the ledger's hold), for a copy of a real submit's row. Whatever else a submit does
costs more, so ``ratio_rps_floor_over_bare`` is the most any submit that accepts a task the way
mjgate must can reach against the bare INSERT. ``task_insert``, a fourth series, is less
still: the task row's INSERT alone (no lock, no tier limit, no queue number, no hold).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["mj-api-secret"] = "%(key)s"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"prompt": "bench submit ' .. counter .. ' --ar 3:2"}')
end
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also the floor: the bare app running only mjgate's acceptance statement",
    )
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--accounts", type=int, default=10, help="sandbox accounts (3 slots)")
    parser.add_argument("--timeout", type=int, default=30, help="wrk's per-request timeout, s")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup(accounts: int = 0) -> str:
    from django.db import connection

    from apps.accounts.models import MembershipTier
    from apps.accounts.provisioning import tenant_provision
    from apps.engines.models import UpstreamAccount
    from apps.tasks.enums import Mode

    MembershipTier.objects.create(code="BENCH", name="Bench", max_unfinished_tasks=10**9)
    UpstreamAccount.objects.bulk_create(
        UpstreamAccount(
            name=f"bench sandbox {n}", engine="sandbox", modes=list(Mode), concurrency=3
        )
        for n in range(accounts)
    )
    tenant = tenant_provision(email="bench@example.com", tier_code="BENCH", tokens=10**13)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_bare (id bigserial PRIMARY KEY, prompt text)")
    return tenant.issued_key.plaintext


def analyze() -> None:
    """Statistics, as a database in service has them (autoanalyze), before the measured runs.

    The benchmark's database starts empty, and each server connection caches the plans of
    its first statements (PL/pgSQL's and prepared ones) for its life: planned over empty
    tables without statistics, the ledger hold's "no hold of this task yet" check read the
    tenant's entries through ``ledger_org_recent`` instead of the unique key, every entry on
    every submit, so PostgreSQL's CPU per submit grew with the run (1.2 ms to over 3 ms) and
    measured the warm-up's plans rather than the submit. ANALYZE invalidates those plans; the
    next execution plans with the statistics, as in service."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def count_statements(key: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    body = json.dumps({"prompt": "count my statements --ar 3:2"})
    client.post("/mj/submit/imagine", body, content_type="application/json", HTTP_MJ_API_SECRET=key)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/mj/submit/imagine", body, content_type="application/json", HTTP_MJ_API_SECRET=key
        )
    assert response.json().get("code") in (1, 22), response.content
    return len(queries.captured_queries)


def gunicorn(
    app: str,
    port: int,
    workers: int,
    env: dict[str, str],
    *,
    worker_class: str = "sync",
    threads: int = 1,
    access_log: Path | None = None,
) -> Any:
    command = [
        *[sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}"],
        *["--workers", str(workers), "--timeout", "60", "--log-level", "warning"],
        *["--worker-class", worker_class, "--threads", str(threads)],
    ]
    if access_log is not None:
        # Each request's time in the worker, in microseconds (server-side latency).
        command += ["--access-logfile", str(access_log), "--access-logformat", "%(D)s"]
    return _stack._start(f"gunicorn-{port}", command, env)


def warm_up(port: int, path: str, headers: dict[str, str], body: bytes | None, count: int) -> None:
    """``count`` requests one after another (each worker's first one loads the URLconf)."""
    import http.client

    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("POST" if body is not None else "GET", path, body, headers)
            connection.getresponse().read()
        finally:
            connection.close()


def wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no server on port {port}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    wrk: str,
    port: int,
    script: Path,
    args: argparse.Namespace,
    *,
    path: str = "/mj/submit/imagine",
    meter: _stack.CpuMeter | None = None,
) -> dict[str, Any]:
    """One ``wrk`` run; with ``meter``, the CPU milliseconds per request of web and PostgreSQL."""
    if meter is not None:
        meter.start()
    output = subprocess.run(
        [
            *[wrk, "-t", "2", "-c", str(args.connections), "-d", f"{args.duration}s"],
            *["--timeout", f"{getattr(args, 'timeout', 30)}s", "--latency", "-s", str(script)],
            f"http://127.0.0.1:{port}{path}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = meter.stop() if meter is not None else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {
        f"p{q}": _ms(value) for q, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    socket_errors = re.search(r"Socket errors: (.*)", output)
    result: dict[str, Any] = {
        "rps": rps,
        "requests": requests,
        "latency_ms": latency,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else None,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if cpu is not None and requests:
        result["cpu_ms_per_request"] = {
            side: round(seconds * 1000 / requests, 3) for side, seconds in cpu.items()
        }
    if meter is not None and meter.server_ms:
        times = sorted(meter.server_ms)
        result["server_ms"] = {
            f"p{q}": round(times[min(len(times) - 1, int(len(times) * q / 100))], 2)
            for q in (50, 99)
        }
    return result


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per server: the medians over rounds of req/s, p50, p99 and CPU ms per request."""

    def cpu(results: list[dict[str, Any]], side: str) -> float | None:
        values = [r["cpu_ms_per_request"][side] for r in results if "cpu_ms_per_request" in r]
        return _stack.median(values)

    return {
        name: {
            "rps": _stack.median([r["rps"] for r in results]),
            "p50_ms": _stack.median([r["latency_ms"].get("p50", 0.0) for r in results]),
            "p99_ms": _stack.median([r["latency_ms"].get("p99", 0.0) for r in results]),
            # In the server (gunicorn's request time), without the wait to be accepted.
            "server_p50_ms": _stack.median(
                [r["server_ms"]["p50"] for r in results if "server_ms" in r]
            ),
            "server_p99_ms": _stack.median(
                [r["server_ms"]["p99"] for r in results if "server_ms" in r]
            ),
            "web_cpu_ms": cpu(results, "web"),
            "postgres_cpu_ms": cpu(results, "postgres"),
        }
        for name, results in runs.items()
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 4) if numerator and denominator else None


def serve_both(
    env: dict[str, str], args: argparse.Namespace
) -> tuple[tuple[int, _stack.CpuMeter], tuple[int, _stack.CpuMeter]]:
    """gunicorn with the bare app and with mjgate, each with its meter of CPU per request."""
    bare_port, app_port = free_port(), free_port()
    database = env["DATABASE_URL"]
    bare_env = {
        **env,
        "PYTHONPATH": str(Path(__file__).resolve().parent),
        "DATABASE_URL": _stack.with_application_name(database, "bench_bare"),
    }
    app_env = {**env, "DATABASE_URL": _stack.with_application_name(database, "bench_mjgate")}
    options = {"worker_class": args.worker_class, "threads": args.threads}
    logs = Path(tempfile.mkdtemp())
    bare_log, app_log = logs / "bare.log", logs / "mjgate.log"
    bare = gunicorn(
        "bare_app:application", bare_port, args.workers, bare_env, access_log=bare_log, **options
    )
    app = gunicorn(
        "config.wsgi:application", app_port, args.workers, app_env, access_log=app_log, **options
    )
    wait_http(bare_port)
    wait_http(app_port)
    db_name = _stack._state["db_name"]
    return (
        (bare_port, _stack.CpuMeter(bare.pid, db_name, "bench_bare", bare_log)),
        (app_port, _stack.CpuMeter(app.pid, db_name, "bench_mjgate", app_log)),
    )


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    env = _stack.prepare("submit", API_RATE_LIMIT=str(10**9), ALLOWED_HOSTS="*")
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "mjgate": []}
    if args.floor:
        runs["floor"] = []
        runs["task_insert"] = []
    try:
        key = setup(args.accounts)
        statements = count_statements(key)
        scripts = Path(tempfile.mkdtemp())
        script = scripts / "submit.lua"
        script.write_text(LUA % {"key": key})
        (bare_port, bare_meter), (app_port, app_meter) = serve_both(env, args)
        headers = {"Content-Type": "application/json", "mj-api-secret": key}
        body = json.dumps({"prompt": "warm up --ar 3:2"}).encode()
        for port in (bare_port, app_port):
            warm_up(port, "/mj/submit/imagine", headers, body, count=args.workers * 3)
            run_wrk(wrk, port, script, argparse.Namespace(**{**vars(args), "duration": 3}))
        analyze()
        for _ in range(args.rounds):
            series = [("bare", bare_port, bare_meter, "/mj/submit/imagine")]
            series.append(("mjgate", app_port, app_meter, "/mj/submit/imagine"))
            if args.floor:
                series.append(("floor", bare_port, bare_meter, "/floor/accept"))
                series.append(("task_insert", bare_port, bare_meter, "/floor/insert"))
            for name, port, meter, path in series:
                runs[name].append(run_wrk(wrk, port, script, args, path=path, meter=meter))
    finally:
        _stack.teardown(keep=args.keep)
    medians = summarize(runs)
    mjgate, bare = medians["mjgate"], medians["bare"]
    print(
        json.dumps(
            {
                "bench": "submit",
                "config": vars(args),
                "machine": _stack.machine(),
                "statements_per_submit": statements,
                "median": medians,
                "ratio_rps_mjgate_over_bare": ratio(mjgate["rps"], bare["rps"]),
                **(
                    {
                        "ratio_rps_floor_over_bare": ratio(medians["floor"]["rps"], bare["rps"]),
                        "ratio_rps_task_insert_over_bare": ratio(
                            medians["task_insert"]["rps"], bare["rps"]
                        ),
                    }
                    if args.floor
                    else {}
                ),
                "ratio_rps_per_round": {
                    name: [
                        round(run["rps"] / base["rps"], 3)
                        for run, base in zip(results, runs["bare"], strict=True)
                    ]
                    for name, results in runs.items()
                    if name != "bare"
                },
                "ratio_cpu_bare_over_mjgate": {
                    "web": ratio(bare["web_cpu_ms"], mjgate["web_cpu_ms"]),
                    "web_and_postgres": ratio(
                        (bare["web_cpu_ms"] or 0) + (bare["postgres_cpu_ms"] or 0),
                        (mjgate["web_cpu_ms"] or 0) + (mjgate["postgres_cpu_ms"] or 0),
                    ),
                },
                "goal": {"ratio": ">= 0.5", "p99_ms": "<= 100", "statements": "<= 8"},
                "runs": runs,
            },
            indent=2,
        )
    )
    # An answer that is not 2xx (a refusal, an error) is cheaper than an acceptance: a run
    # with any measured something else than the submit.
    refused = {name: sum(run["non_2xx"] for run in results) for name, results in runs.items()}
    if any(refused.values()):
        print(f"answers not 2xx: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
