#!/usr/bin/env python
"""P4 (issue 15): webhook deliveries to a fast local receiver. Prints JSON; asserts nothing.

    .venv/bin/python bench/webhooks.py                      # 3 rounds, 3000 messages, 300/s offered
    .venv/bin/python bench/webhooks.py --events 1000 --rate 300 --duration 5 --rounds 3

One webhook worker runs as in production (``celery worker -Q <webhooks queue> --pool threads``,
``--concurrency`` threads, local settings on PostgreSQL and Redis); the receiver is an asyncio
HTTP/1.1 server in its own process (``bench/webhook_receiver.py``) that logs when each message
arrived. Every round runs, side by side:

- ``bare``: the baseline, plain keep-alive POSTs of the same body from ``--send-concurrency``
  threads in another process to the same receiver (what the machine can do without mjgate);
- ``capacity``: ``--events`` messages published to the outbox (real task changes, with the
  broker send held back) and then one doorbell per worker thread: deliveries/s from the
  doorbell to the last arrival, and the worker's CPU per delivery;
- ``rate``: messages arriving at ``--rate`` per second for ``--duration`` seconds, each with
  the Celery message a publish sends (see :func:`rate_round`), while the worker runs: arrival
  -> first attempt at the receiver, p50/p99/max, the delivered rate, and the worker's CPU per
  delivery.

Once per run, the statements and CPU of one delivery round are counted in this process (the
same code the worker runs, ``deliveries_drain``). Medians over rounds and the load average go
with the figures: only ratios measured in one run are comparable between machines.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=3000, help="messages per capacity round")
    parser.add_argument("--rate", type=float, default=300.0, help="offered messages per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads (Celery)")
    parser.add_argument("--send-concurrency", type=int, default=16, help="WEBHOOK_SEND_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per phase")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--bare-client", nargs=3, metavar=("PORT", "COUNT", "THREADS"))
    parser.add_argument("--doorbell-child")
    return parser.parse_args()


# --- The bare baseline (runs in a child process) --------------------------------------------------


def bare_client(port: int, count: int, threads: int) -> None:
    """POST ``count`` bodies over keep-alive connections from ``threads`` threads; print s."""
    body = json.dumps({"id": "1" * 19, "status": "SUBMITTED", "prompt": "x" * 600}).encode()
    headers = {
        "Content-Type": "application/json",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 44,
    }
    left = [count]
    lock = threading.Lock()

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            conn.request("POST", "/bare", body=body, headers=headers)
            conn.getresponse().read()
        conn.close()

    started = time.monotonic()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"seconds": time.monotonic() - started}))


def run_bare(port: int, count: int, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--bare-client", str(port), str(count), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = json.loads(out.stdout)["seconds"]
    return {"posts": count, "seconds": round(seconds, 3), "per_s": round(count / seconds, 1)}


# --- The stack -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.log = work / "receiver.log"
        self.log.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "webhook_receiver.py"), str(self.port), str(self.log)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        _stack._children.append(self.process)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "ready"

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def arrivals(self) -> dict[str, float]:
        """First arrival per webhook-id."""
        seen: dict[str, float] = {}
        for line in self.log.read_text().splitlines():
            msg_id, _, at = line.partition(" ")
            if msg_id != "-" and msg_id not in seen:
                seen[msg_id] = float(at)
        return seen


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def make_tasks(organization: Any, url: str, count: int) -> list[Any]:
    from apps.tasks.enums import Action, Status
    from apps.tasks.models import Protocol, Task, new_task_id

    # Thousands of ids made within a few milliseconds: their six random digits may collide.
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(new_task_id())
    return Task.objects.bulk_create(
        [
            Task(
                id=task_id,
                organization=organization,
                protocol=Protocol.MJPROXY,
                action=Action.IMAGINE,
                status=Status.SUBMITTED,
                prompt=f"a benchmark fox {index} --v 6",
                prompt_en=f"a benchmark fox {index}",
                notify_hook=url,
            )
            for index, task_id in enumerate(sorted(ids))
        ],
        batch_size=1000,
    )


def publish(task: Any) -> None:
    from django.db import transaction

    from apps.tasks.events import task_changed

    with transaction.atomic():
        task_changed(task=task, event_type="task.updated")


class _HeldBroker:
    """Publish without the Celery send (the outbox rows only), as during a broker outage."""

    def __enter__(self) -> None:
        from apps.core import messaging

        messaging._skip_until = time.monotonic() + 10**6

    def __exit__(self, *exc: object) -> None:
        from apps.core import messaging

        messaging.broker_breaker_reset()


def wait_arrivals(receiver: Receiver, msg_ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrived = receiver.arrivals()
        if msg_ids <= arrived.keys() or time.monotonic() > deadline:
            return {m: arrived[m] for m in msg_ids if m in arrived}
        time.sleep(0.1)


def timezone_now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def wait_queue_empty(queue: str, timeout: float = 120) -> None:
    """Until the worker took every doorbell of the previous phase off the queue (those left
    would start on the next phase's messages before it is timed), and a moment more."""
    import redis

    client = redis.Redis.from_url(_stack.REDIS_URL)
    deadline = time.monotonic() + timeout
    while client.llen(queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)


def wait_settled(timeout: float) -> None:
    """Until no attempt is pending or claimed (the worker recorded every outcome)."""
    from apps.webhooks.models import WebhookDelivery

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not WebhookDelivery.objects.filter(state="pending").exists():
            return
        time.sleep(0.1)


def msg_ids_of(tasks: list[Any]) -> dict[str, float]:
    from apps.webhooks.models import WebhookEvent

    return {
        msg_id: created.timestamp()
        for msg_id, created in WebhookEvent.objects.filter(
            task_id__in=[t.pk for t in tasks]
        ).values_list("msg_id", "created_at")
    }


def capacity_round(
    args: argparse.Namespace, organization: Any, receiver: Receiver, worker_pid: int
) -> dict[str, Any]:
    from django.db import transaction

    from apps.core.messaging import send_now
    from apps.webhooks.conf import DELIVER_TASK
    from apps.webhooks.models import WebhookDelivery

    tasks = make_tasks(organization, receiver.url(), args.events)
    later = timezone_now() + timedelta(days=1)
    with _HeldBroker(), transaction.atomic():
        for task in tasks:
            publish(task)
        # Not due until the doorbells ring: no stray doorbell may start on them early.
        attempts = WebhookDelivery.objects.filter(event__task__in=tasks)
        attempts.update(next_attempt_at=later)
    created = msg_ids_of(tasks)
    wait_queue_empty(args.queue)
    attempts.update(next_attempt_at=timezone_now())
    cpu_before = cpu_seconds(worker_pid)
    started = time.time()
    for _ in range(args.concurrency):
        send_now(DELIVER_TASK, [])
    arrived = wait_arrivals(receiver, set(created), args.timeout)
    wait_settled(args.timeout)
    cpu = cpu_seconds(worker_pid) - cpu_before
    last = max(arrived.values()) if arrived else started
    return {
        "messages": len(created),
        "delivered": len(arrived),
        "seconds": round(last - started, 3),
        "per_s": round(len(arrived) / (last - started), 1) if last > started else None,
        "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(1, len(arrived)), 3),
    }


def rate_round(
    args: argparse.Namespace, organization: Any, receiver: Receiver, worker_pid: int
) -> dict[str, Any]:
    """Messages arriving at ``--rate`` per second, each with its own doorbell message.

    The outbox rows are written first (real task changes, the broker send held back) and each
    is then made due at its arrival time (``next_attempt_at`` = ``created_at`` = start + i/rate);
    a sender process sends, at that moment, exactly the message a publish sends. So the worker
    sees what it would see behind publishers producing ``--rate`` changes per second, without
    the publishers' own cost (the lifecycle's, measured by bench/submit.py and bench/e2e.py)
    competing for this machine's two cores. Latency is counted from the arrival time, so a
    sender running late counts against the figure, never for it.
    """
    from django.db import connection, transaction

    from apps.webhooks.models import WebhookDelivery, WebhookEvent

    count = int(args.rate * args.duration)
    tasks = make_tasks(organization, receiver.url(), count)
    later = timezone_now() + timedelta(days=1)
    with _HeldBroker(), transaction.atomic():
        for task in tasks:
            publish(task)
        WebhookDelivery.objects.filter(event__task__in=tasks).update(next_attempt_at=later)
    wait_queue_empty(args.queue)
    events = list(
        WebhookEvent.objects.filter(task_id__in=[t.pk for t in tasks])
        .order_by("id")
        .values_list("id", "msg_id")
    )
    sender = subprocess.Popen(
        [sys.executable, __file__, "--doorbell-child", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sender.stdin is not None and sender.stdout is not None
    sender.stdout.readline()  # "ready": Django is set up and the broker connection open
    start = time.time() + 0.5
    arrival = {event_id: start + index / args.rate for index, (event_id, _) in enumerate(events)}
    # (the UPDATEs below take a moment: arrivals start after them)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE webhooks_webhookdelivery d
            SET next_attempt_at = to_timestamp(v.at), dispatched_until = NULL
            FROM unnest(%s::bigint[], %s::float8[]) AS v(event_id, at)
            WHERE d.event_id = v.event_id
            """,
            [list(arrival), list(arrival.values())],
        )
        cursor.execute(
            """
            UPDATE webhooks_webhookevent e SET created_at = to_timestamp(v.at)
            FROM unnest(%s::bigint[], %s::float8[]) AS v(id, at) WHERE e.id = v.id
            """,
            [list(arrival), list(arrival.values())],
        )
    schedule = _stack._state["work"] / "rate-schedule.json"
    schedule.write_text(json.dumps([[event_id, at] for event_id, at in arrival.items()]))
    cpu_before = cpu_seconds(worker_pid)
    sender.stdin.write(f"{schedule}\n")
    sender.stdin.flush()
    lag = json.loads(sender.stdout.readline())
    sender.wait()
    by_msg = {msg_id: arrival[event_id] for event_id, msg_id in events}
    arrived = wait_arrivals(receiver, set(by_msg), args.timeout)
    wait_settled(args.timeout)
    cpu = cpu_seconds(worker_pid) - cpu_before
    latencies = [(arrived[m] - by_msg[m]) * 1000 for m in arrived]
    last = max(arrived.values()) if arrived else start
    return {
        "messages": count,
        "offered_per_s": args.rate,
        "doorbell_lag_ms": lag,
        "delivered": len(arrived),
        "delivered_per_s": round(len(arrived) / (last - start), 1) if last > start else None,
        "first_attempt_ms": {
            "p50": _round(_stack.percentile(latencies, 0.5)),
            "p99": _round(_stack.percentile(latencies, 0.99)),
            "max": _round(max(latencies) if latencies else None),
        },
        "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(1, len(arrived)), 3),
    }


def doorbell_child() -> None:
    """Send each message's doorbell (what publishing sends on commit) at its arrival time.

    Says "ready" once set up, then reads the schedule's file name from stdin."""
    import django

    sys.path.insert(0, str(_stack.ROOT))
    django.setup()
    from apps.core.messaging import send_now
    from apps.webhooks.conf import DELIVER_TASK

    send_now(DELIVER_TASK, [])  # opens the broker connection (an empty doorbell is harmless)
    print("ready", flush=True)
    schedule_file = sys.stdin.readline().strip()
    lags: list[float] = []
    for event_id, at in json.loads(Path(schedule_file).read_text()):
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        send_now(DELIVER_TASK, [event_id])
        lags.append((time.time() - at) * 1000)
    print(
        json.dumps(
            {
                "p50": _round(_stack.percentile(lags, 0.5)),
                "p99": _round(_stack.percentile(lags, 0.99)),
            }
        )
    )


def in_process_costs(organization: Any, receiver: Receiver, count: int = 256) -> dict[str, Any]:
    """Statements and CPU of delivering ``count`` messages with the worker's own code."""
    from django.db import connection

    from apps.webhooks.delivery import deliveries_drain

    tasks = make_tasks(organization, receiver.url(), count)
    with _HeldBroker():
        for task in tasks:
            publish(task)
    statements = [0]

    def counter(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[0] += 1
        return execute(sql, params, many, context)

    cpu_before = time.process_time()
    with connection.execute_wrapper(counter):
        delivered = deliveries_drain()
    cpu = time.process_time() - cpu_before
    return {
        "deliveries": delivered,
        "statements_per_delivery": round(statements[0] / max(1, delivered), 3),
        "cpu_ms_per_delivery": round(cpu * 1000 / max(1, delivered), 3),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> int:
    args = parse_args()
    if args.doorbell_child:
        doorbell_child()
        return 0
    if args.bare_client:
        port, count, threads = (int(v) for v in args.bare_client)
        bare_client(port, count, threads)
        return 0
    queue = args.queue = f"bench-webhooks-{os.getpid()}"
    env = _stack.prepare(
        "webhooks",
        WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="true",
        CELERY_WEBHOOKS_QUEUE=queue,
        WEBHOOK_SEND_CONCURRENCY=str(args.send_concurrency),
    )
    rounds: list[dict[str, Any]] = []
    try:
        from apps.accounts.provisioning import tenant_provision
        from apps.webhooks.services import webhook_secret_ensure

        organization = tenant_provision(
            email="bench-webhooks@example.com", tier_code="PREMIUM", tokens=10**6
        ).organization
        webhook_secret_ensure(organization=organization)
        receiver = Receiver(_stack._state["work"])
        costs = in_process_costs(organization, receiver)
        worker = _stack.start_worker(
            env, concurrency=args.concurrency, pool="threads", queues=queue, name="webhooks"
        )
        # Warm up: the worker is ready once a first message went through.
        warm = make_tasks(organization, receiver.url(), 1)
        publish(warm[0])
        if not wait_arrivals(receiver, set(msg_ids_of(warm)), 60):
            raise SystemExit("the webhook worker never delivered:\n" + _stack.log_tail("webhooks"))
        for _ in range(args.rounds):
            bare = run_bare(receiver.port, args.events, args.send_concurrency)
            capacity = capacity_round(args, organization, receiver, worker.pid)
            rate = rate_round(args, organization, receiver, worker.pid)
            rounds.append(
                {
                    "bare": bare,
                    "capacity": capacity,
                    "rate": rate,
                    "capacity_vs_bare": round(capacity["per_s"] / bare["per_s"], 4)
                    if capacity["per_s"]
                    else None,
                    "loadavg": os.getloadavg()[0],
                }
            )
    finally:
        _stack.teardown(keep=args.keep)

    def med(path: tuple[str, ...]) -> float | None:
        values = []
        for entry in rounds:
            value: Any = entry
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(float(value))
        return _stack.median(values)

    print(
        json.dumps(
            {
                "bench": "webhooks",
                "config": {
                    k: v
                    for k, v in vars(args).items()
                    if k not in ("bare_client", "doorbell_child")
                },
                "machine": _stack.machine(),
                "in_process": costs,
                "median": {
                    "bare_posts_per_s": med(("bare", "per_s")),
                    "deliveries_per_s": med(("capacity", "per_s")),
                    "capacity_vs_bare": med(("capacity_vs_bare",)),
                    "at_rate_delivered_per_s": med(("rate", "delivered_per_s")),
                    "at_rate_first_attempt_p50_ms": med(("rate", "first_attempt_ms", "p50")),
                    "at_rate_first_attempt_p99_ms": med(("rate", "first_attempt_ms", "p99")),
                    "worker_cpu_ms_per_delivery": med(("capacity", "worker_cpu_ms_per_delivery")),
                    "statements_per_delivery": costs["statements_per_delivery"],
                },
                "goal": {
                    "deliveries_per_s": ">= 300",
                    "at_rate_first_attempt_p99_ms": "<= 1000 at 300/s",
                },
                "rounds": rounds,
            },
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
