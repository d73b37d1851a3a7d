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
does under a burst. The tenant sits on a tier without a practical limit and the per-key rate
limit is lifted, so every request takes the full accept path rather than a refusal.
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
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
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


def setup() -> str:
    from django.db import connection

    from apps.accounts.models import MembershipTier
    from apps.accounts.provisioning import tenant_provision

    MembershipTier.objects.create(code="BENCH", name="Bench", max_unfinished_tasks=10**9)
    tenant = tenant_provision(email="bench@example.com", tier_code="BENCH", tokens=10**13)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_bare (id bigserial PRIMARY KEY, prompt text)")
    return tenant.issued_key.plaintext


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


def gunicorn(app: str, port: int, workers: int, env: dict[str, str]) -> Any:
    command = [
        *[sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}"],
        *["--workers", str(workers), "--timeout", "60", "--log-level", "warning"],
    ]
    return _stack._start(f"gunicorn-{port}", command, env)


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


def run_wrk(wrk: str, port: int, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    output = subprocess.run(
        [
            *[wrk, "-t", "2", "-c", str(args.connections), "-d", f"{args.duration}s"],
            *["--latency", "-s", str(script), f"http://127.0.0.1:{port}/mj/submit/imagine"],
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {
        f"p{q}": _ms(value) for q, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rps, "latency_ms": latency, "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    env = _stack.prepare("submit", API_RATE_LIMIT=str(10**9), ALLOWED_HOSTS="*")
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "mjgate": []}
    try:
        key = setup()
        statements = count_statements(key)
        scripts = Path(tempfile.mkdtemp())
        script = scripts / "submit.lua"
        script.write_text(LUA % {"key": key})
        bare_port, app_port = free_port(), free_port()
        bare_env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent)}
        gunicorn("bare_app:application", bare_port, args.workers, bare_env)
        gunicorn("config.wsgi:application", app_port, args.workers, env)
        wait_http(bare_port)
        wait_http(app_port)
        for port in (bare_port, app_port):  # warm-up
            run_wrk(wrk, port, script, argparse.Namespace(**{**vars(args), "duration": 2}))
        for _ in range(args.rounds):
            for name, port in (("bare", bare_port), ("mjgate", app_port)):
                runs[name].append(run_wrk(wrk, port, script, args))
    finally:
        _stack.teardown(keep=args.keep)
    medians = {
        name: {
            "rps": _stack.median([r["rps"] for r in results]),
            "p99_ms": _stack.median([r["latency_ms"].get("p99", 0.0) for r in results]),
        }
        for name, results in runs.items()
    }
    ratio = medians["mjgate"]["rps"] / medians["bare"]["rps"] if medians["bare"]["rps"] else None
    print(
        json.dumps(
            {
                "bench": "submit",
                "config": vars(args),
                "machine": _stack.machine(),
                "statements_per_submit": statements,
                "median": medians,
                "ratio_rps_mjgate_over_bare": None if ratio is None else round(ratio, 4),
                "goal": {"ratio": ">= 0.5", "p99_ms": "<= 100", "statements": "<= 8"},
                "runs": runs,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
