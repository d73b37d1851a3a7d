#!/usr/bin/env python
"""Issue 15's goal table in one run: each bench in turn, one line per figure. Prints JSON.

    .venv/bin/python bench/goals.py                     # every bench at the issue's settings
    .venv/bin/python bench/goals.py --only submit fetch --rounds 1

Runs the benches one after another (never two at once: they would measure each other), each
with its own baseline in the same run, and reads their JSON. For every figure of the issue's
table it prints what was measured (medians over the bench's rounds), the baseline where the
bench has one, the goal, whether it is met, and the load average around that bench — only
ratios compare across machines, and a busy machine moves every absolute figure. Exits 0 whether
or not the goals are met: it measures, it does not judge a build.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Figure:
    name: str
    read: Callable[[dict[str, Any]], float | None]
    goal: str
    met: Callable[[float], bool]
    baseline: Callable[[dict[str, Any]], float | None] | None = None


def _get(*path: str | int) -> Callable[[dict[str, Any]], float | None]:
    def read(data: dict[str, Any]) -> float | None:
        value: Any = data
        for step in path:
            if value is None:
                return None
            value = value[step] if isinstance(step, int) else value.get(step)
        return None if value is None else float(value)

    return read


#: bench -> (arguments at the issue's settings, the figures read off its JSON)
BENCHES: dict[str, tuple[list[str], list[Figure]]] = {
    "submit": (
        [],
        [
            Figure(
                "P1 submit req/s over the bare INSERT view",
                _get("ratio_rps_mjgate_over_bare"),
                ">= 0.5",
                lambda v: v >= 0.5,
            ),
            Figure(
                "P1 submit p99 ms (wrk)",
                _get("median", "mjgate", "p99_ms"),
                "<= 100",
                lambda v: v <= 100,
                _get("median", "bare", "p99_ms"),
            ),
            Figure(
                "P1 SQL statements per submit",
                _get("statements_per_submit"),
                "<= 8",
                lambda v: v <= 8,
            ),
        ],
    ),
    "dispatch": (
        [],
        [
            Figure(
                "P2 slot utilisation (10 x 3 slots, 600 jobs of 1 s)",
                _get("median", "utilisation"),
                ">= 0.97",
                lambda v: v >= 0.97,
            ),
            Figure(
                "P2 slot free -> next start p99 ms",
                _get("median", "free_to_start_p99_ms"),
                "<= 200",
                lambda v: v <= 200,
            ),
            Figure(
                "fair pick ms at 100,000 queued (server time; baseline: the LATERAL pick)",
                _get("fair_pick", "pick_ms"),
                "<= 5",
                lambda v: v <= 5,
                _get("fair_pick", "lateral_ms"),
            ),
        ],
    ),
    "queue_position": (
        [],
        [
            Figure(
                "queue position cost, 100,000 over 1,000 queued",
                _get("flatness"),
                "<= 1.5 (flat)",
                lambda v: v <= 1.5,
            ),
        ],
    ),
    "fetch": (
        [],
        [
            Figure(
                "P3 fetch server p99 ms (1,000,000 tasks)",
                _get("median", "fetch", "server_p99_ms"),
                "<= 10",
                lambda v: v <= 10,
                _get("median", "bare_pk_select", "server_p99_ms"),
            ),
            Figure(
                "P3 list server p99 ms",
                _get("median", "list", "server_p99_ms"),
                "<= 25",
                lambda v: v <= 25,
            ),
        ],
    ),
    "webhooks": (
        [],
        [
            Figure(
                "P4 webhook deliveries/s",
                _get("median", "deliveries_per_s"),
                ">= 300",
                lambda v: v >= 300,
                _get("median", "bare_posts_per_s"),
            ),
            Figure(
                "P4 event -> first attempt p99 ms at 300/s",
                _get("median", "at_rate_first_attempt_p99_ms"),
                "<= 1000",
                lambda v: v <= 1000,
            ),
        ],
    ),
    "e2e": (
        [],
        [
            Figure(
                "P5 upstream done -> SUCCESS via fetch p99 ms",
                _get("median", "fetch_p99_ms"),
                "<= 1000",
                lambda v: v <= 1000,
            ),
            Figure(
                "P5 upstream done -> webhook received p99 ms",
                _get("median", "webhook_p99_ms"),
                "<= 1000",
                lambda v: v <= 1000,
            ),
        ],
    ),
    "memory": (
        [],
        [
            Figure(
                "P6 gunicorn worker RSS MiB",
                _get("median", "web_worker_rss_mib"),
                "<= 143 (150 MB)",
                lambda v: v <= 143,
                _get("median", "bare_web_worker_rss_mib"),
            ),
            Figure(
                "P6 4-process Celery worker PSS MiB",
                _get("median", "celery_worker_total_pss_mib"),
                "<= 381 (400 MB)",
                lambda v: v <= 381,
            ),
            Figure(
                "P6 4-process Celery worker RSS MiB (shared pages counted per process)",
                _get("median", "celery_worker_total_rss_mib"),
                "<= 381 (400 MB)",
                lambda v: v <= 381,
            ),
        ],
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="these benches only")
    parser.add_argument("--rounds", type=int, help="rounds of every bench (default: its own)")
    parser.add_argument("--out", type=Path, help="also keep each bench's whole JSON here")
    return parser.parse_args()


def run(name: str, extra: list[str], rounds: int | None) -> tuple[dict[str, Any], list[float]]:
    command = [sys.executable, str(HERE / f"{name}.py"), *extra]
    if rounds is not None and name != "queue_position":
        command += ["--rounds", str(rounds)]
    before = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        return {"error": f"exit {done.returncode}"}, [before, os.getloadavg()[0]]
    data = json.loads(done.stdout)
    data["_seconds"] = round(time.monotonic() - started, 1)
    return data, [round(before, 2), round(os.getloadavg()[0], 2)]


def main() -> int:
    args = parse_args()
    rows: list[dict[str, Any]] = []
    whole: dict[str, Any] = {}
    for name, (extra, figures) in BENCHES.items():
        if args.only and name not in args.only:
            continue
        data, load = run(name, extra, args.rounds)
        whole[name] = data
        for figure in figures:
            value = figure.read(data) if "error" not in data else None
            rows.append(
                {
                    "figure": figure.name,
                    "measured": value,
                    "baseline": figure.baseline(data) if figure.baseline and value else None,
                    "goal": figure.goal,
                    "met": None if value is None else figure.met(value),
                    "bench": name,
                    "loadavg_1m_before_after": load,
                }
            )
    if args.out:
        args.out.write_text(json.dumps(whole, indent=2, default=str))
    print(
        json.dumps(
            {
                "bench": "goals",
                "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
                "figures": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
