#!/usr/bin/env python
"""Benchmark the discord engine against the fake Discord (issue 13): prints JSON, asserts nothing.

    .venv/bin/python bench/discord_bench.py                       # 10 accounts × 3 slots, 60 s
    .venv/bin/python bench/discord_bench.py --seconds 20 --rss-accounts 50

Part 1 — slot utilisation. ``--accounts`` discord accounts on the fake, whose bot takes about
``--job-seconds`` per job, each with ``--slots`` slots kept full by one thread per slot:
submit through the engine, wait for the gateway's pushed result, submit the next one. The
gateway runs in this process (as ``manage.py discord_gateway`` would), the results arrive
through its sink. ``utilisation`` is the share of slot-time during which a job was in flight
(submitted, not yet reported); ``work_share`` is the share of slot-time the bot spent on the
jobs themselves (jobs × job time / slot-time), which also charges our overhead per job.

Part 2 — gateway memory. ``manage.py discord_gateway --poll-only`` in a subprocess holding
``--rss-accounts`` accounts, all connected and heartbeating; its resident set size in MB.

It uses a separate PostgreSQL database (``--db-name``), created and dropped here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured run time")
    parser.add_argument("--rss-accounts", type=int, default=50)
    parser.add_argument("--db-name", default="bench_mjgate_discord")
    return parser.parse_args(argv)


def setup_django(db_name: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ["MJGATE_TEST_DB_NAME"] = db_name
    import django

    django.setup()


def make_accounts(fake: Any, count: int, prefix: str) -> list[tuple[Any, str]]:
    from apps.engines.services import upstream_account_create

    made = []
    for number in range(count):
        channel = str(800_000_000_000 + int(time.time() * 1000) % 10**9 * 100 + number)
        token = f"mfa.bench{uuid.uuid4().hex}{uuid.uuid4().hex}"
        fake.add_user(token, guild_id="600000000000000001", channel_ids=[channel], queue_limit=50)
        account = upstream_account_create(
            engine="discord",
            name=f"{prefix}-{number}",
            modes=["FAST", "RELAX"],
            options={
                "guild_id": "600000000000000001",
                "channel_id": channel,
                "rest_base_url": f"{fake.url}/api/v10",
                "gateway_url": f"{fake.url.replace('http', 'ws', 1)}/gateway",
                "cdn_base_url": fake.url,
                "inpaint_base_url": fake.url,
                "submit_confirm_seconds": 0,
                "token": token,
            },
        )
        made.append((account, token))
    return made


def utilisation(args: argparse.Namespace, fake: Any) -> dict[str, Any]:
    import asyncio

    from django.db import connection

    from apps.engines.base import AccountView, Job, JobUpdate
    from apps.engines.discord.engine import DiscordEngine
    from apps.engines.discord.gateway import GatewayService

    accounts = make_accounts(fake, args.accounts, "util")
    done: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def sink(update: JobUpdate) -> None:
        if update.result.status in ("success", "failure"):
            with lock:
                event = done.setdefault(update.upstream_job_id, threading.Event())
            event.set()

    service = GatewayService(holder="bench", sink=sink, ttl=30, renew_every=5, threads=8)
    loop = asyncio.new_event_loop()
    gateway = threading.Thread(target=lambda: loop.run_until_complete(service.run()), daemon=True)
    gateway.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        (c := service.connections.get(a.pk)) is not None and c.connected.is_set()
        for a, _t in accounts
    ):
        time.sleep(0.1)

    engine = DiscordEngine()
    busy: list[float] = []
    jobs: list[int] = []
    failures: list[str] = []
    submit_times: list[float] = []
    wait_times: list[float] = []
    start = time.monotonic()
    stop_at = start + args.seconds

    def slot(account: Any) -> None:
        view = AccountView(
            id=account.pk,
            engine="discord",
            name=account.name,
            modes=("FAST",),
            options=dict(account.options),
            secrets=dict(account.secrets),
        )
        mine = 0.0
        count = 0
        while time.monotonic() < stop_at:
            began = time.monotonic()
            job = Job(
                task_id=uuid.uuid4().hex,
                action="IMAGINE",
                mode="FAST",
                prompt=f"bench {uuid.uuid4().hex[:8]}",
                params={},
                account=view,
            )
            try:
                submitted = engine.submit(job)
            except Exception as exc:
                failures.append(repr(exc))
                continue
            sent = time.monotonic()
            with lock:
                event = done.setdefault(submitted.upstream_job_id, threading.Event())
            event.wait(30)
            with lock:
                submit_times.append(sent - began)
                wait_times.append(time.monotonic() - sent)
            mine += min(time.monotonic(), stop_at) - began
            count += 1
        with lock:
            busy.append(mine)
            jobs.append(count)
        connection.close()

    threads = [
        threading.Thread(target=slot, args=(account,))
        for account, _token in accounts
        for _ in range(args.slots)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    loop.call_soon_threadsafe(service.stop)
    gateway.join(15)
    slot_time = args.accounts * args.slots * args.seconds
    stats = fake.stats()
    return {
        "accounts": args.accounts,
        "slots_per_account": args.slots,
        "job_seconds": args.job_seconds,
        "measured_seconds": round(args.seconds, 1),
        "wall_seconds": round(wall, 1),
        "jobs_finished": sum(jobs),
        "jobs_per_slot_median": statistics.median(jobs) if jobs else 0,
        "utilisation": round(sum(busy) / slot_time, 4),
        "work_share": round(sum(jobs) * args.job_seconds / slot_time, 4),
        # Where a job's slot-time goes: our submit (REST calls), then the bot's work and the
        # gateway's news (the result downloaded) until the slot is free again.
        "submit_seconds_median": _median(submit_times),
        "result_wait_seconds_median": _median(wait_times),
        "submit_failures": len(failures),
        "duplicate_nonces": stats["duplicate_nonces"],
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def gateway_rss(args: argparse.Namespace, fake: Any, db_name: str) -> dict[str, Any]:
    accounts = make_accounts(fake, args.rss_accounts, "rss")
    tokens = {token for _account, token in accounts}
    env = {
        **os.environ,
        "TEST_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}",
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
    }
    ids = [arg for account, _token in accounts for arg in ("--account", str(account.pk))]
    process = subprocess.Popen(
        [sys.executable, "manage.py", "discord_gateway", "--poll-only", "--holder", "rss", *ids],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        connected = 0
        while time.monotonic() < deadline:
            connected = len(tokens & set(fake.stats()["live_sessions"]))
            if connected == len(tokens):
                break
            time.sleep(0.2)
        time.sleep(3)  # a few heartbeats
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kb = int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )
        return {"accounts": len(tokens), "connected": connected, "rss_mb": round(rss_kb / 1024, 1)}
    finally:
        process.terminate()
        process.wait(20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(args.db_name)
    from django.db import connection

    from apps.engines.discord.fake import FakeDiscordClient

    old_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    steps = 3
    # The fake runs in its own process, as Discord would: it does not share our interpreter.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.engines.discord.fake",
            "--port",
            "0",
            "--steps",
            str(steps),
            "--step-seconds",
            str(args.job_seconds / (steps + 1)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    fake = FakeDiscordClient(server.stdout.readline().strip().rsplit(" ", 1)[-1])
    try:
        report = {
            "slot_utilisation": utilisation(args, fake),
            "gateway_memory": gateway_rss(args, fake, db_name),
        }
        print(json.dumps(report, indent=2))
    finally:
        server.terminate()
        server.wait(10)
        # The gateway's worker threads still hold connections to the bench database.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [db_name],
            )
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
