"""Deliveries have a queue of their own, and both ways of running mjgate give it its own worker
(issue 19): behind engine jobs a first attempt waited 11 s."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _settings_default(name: str) -> str:
    source = (ROOT / "config" / "settings" / "base.py").read_text()
    match = re.search(rf'^{name} = env_str\("{name}"\) or "([^"]+)"', source, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_deliveries_are_routed_to_their_own_queue():
    source = (ROOT / "config" / "settings" / "base.py").read_text()
    routes = source.split("CELERY_TASK_ROUTES = {", 1)[1].split("}\n", 1)[0]
    assert '"webhooks.*": {"queue": CELERY_WEBHOOKS_QUEUE}' in routes
    assert _settings_default("CELERY_WEBHOOKS_QUEUE") != _settings_default(
        "CELERY_TASK_DEFAULT_QUEUE"
    )


def test_compose_runs_a_worker_for_the_webhooks_queue_only():
    compose = (ROOT / "docker" / "compose.yml").read_text()
    queue = _settings_default("CELERY_WEBHOOKS_QUEUE")
    webhooks = compose.split("\n  webhooks:\n", 1)[1].split("\n  beat:\n", 1)[0]
    assert f"--queues={queue}" in webhooks
    assert "--pool=threads" in webhooks
    engine = compose.split("\n  worker:\n", 1)[1].split("\n  results:\n", 1)[0]
    assert "--queues" not in engine  # the default queue: engine jobs, not deliveries
    results = compose.split("\n  results:\n", 1)[1].split("\n  webhooks:\n", 1)[0]
    assert f"--queues={queue}" not in results and "--queues=" in results


def test_the_run_command_runs_a_worker_for_the_webhooks_queue_only():
    spec = importlib.util.spec_from_file_location("devrun", ROOT / "scripts" / "devrun.py")
    assert spec is not None and spec.loader is not None
    devrun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(devrun)
    webhooks = devrun.PROCESSES["webhooks"]
    assert webhooks[webhooks.index("--queues") + 1] == devrun.WEBHOOKS_QUEUE
    worker = devrun.PROCESSES["worker"]
    assert "-Q" not in worker
    # The engine worker serves the task queue and the results queue, never the deliveries'.
    served = worker[worker.index("--queues") + 1].split(",")
    assert devrun.TASKS_QUEUE in served and devrun.WEBHOOKS_QUEUE not in served
