"""A real stack for benchmarks: a throw-away PostgreSQL database, Redis, Celery processes.

Benchmarks import this, call :func:`prepare` (settings + a fresh database, migrated) and start
processes with :func:`start_worker` / :func:`start_beat`; everything is stopped and the database
dropped by :func:`teardown` (also on Ctrl-C). Numbers are printed as JSON by the caller, with
the machine's load average (:func:`machine`), because on shared machines only ratios measured
side by side in one run are stable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

_children: list[subprocess.Popen[bytes]] = []
_state: dict[str, Any] = {}


def _pg_url(db_name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{db_name}"


def environment(db_name: str, queue: str, media: Path, **extra: str) -> dict[str, str]:
    """The environment of the benchmarked processes: local settings on PostgreSQL and Redis."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DEBUG": "false",
        "DATABASE_URL": _pg_url(db_name),
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "MJGATE_VAR_DIR": str(media.parent),
        "MEDIA_ROOT": str(media),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def _admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def prepare(name: str, **extra_env: str) -> dict[str, str]:
    """Create the database, point this process's Django at it, migrate. Returns the env for
    child processes."""
    run_id = f"{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_name = f"mjgate_bench_{run_id}"
    work = Path(os.environ.get("BENCH_WORK_DIR", ROOT / "var" / "bench")) / run_id
    media = work / "media"
    media.mkdir(parents=True, exist_ok=True)
    _admin_execute(f'CREATE DATABASE "{db_name}"')
    _state.update(db_name=db_name, work=work)
    env = environment(db_name, queue=f"bench-{run_id}", media=media, **extra_env)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _state["env"] = env
    return env


def _start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (_state["work"] / f"{name}.log").open("wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    _children.append(process)
    return process


def start_worker(
    env: dict[str, str],
    *,
    concurrency: int = 4,
    pool: str = "prefork",
    queues: str | None = None,
    name: str = "worker",
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        # Celery's command line without click-repl and pygments (config/celery_cli.py).
        "config.celery_cli",
        "-A",
        "config",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-Q",
        queues or f"{env['CELERY_TASK_DEFAULT_QUEUE']},{results_queue(env)}",
        "-n",
        f"{name}-{uuid.uuid4().hex[:6]}@localhost",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
    ]
    return _start(name, command, env)


def results_queue(env: dict[str, str]) -> str:
    """The queue where results are made and stored (named as config/settings/base.py does)."""
    return env.get("CELERY_RESULTS_QUEUE") or f"{env['CELERY_TASK_DEFAULT_QUEUE']}-results"


def start_results_worker(
    env: dict[str, str], *, concurrency: int = 2, nice: int = 10
) -> subprocess.Popen[bytes]:
    """A low-priority worker for the results queue alone, as compose runs it (``nice`` 10)."""
    return start_worker(
        {**env, "CELERY_WORKER_NICE": str(nice)},
        concurrency=concurrency,
        queues=results_queue(env),
        name="results",
    )


def start_beat(env: dict[str, str]) -> subprocess.Popen[bytes]:
    schedule = beat_schedule_path()
    command = [
        *[sys.executable, "-m", "config.celery_cli", "-A", "config", "beat"],
        *["--loglevel", "WARNING", "--schedule", str(schedule)],
    ]
    return _start("beat", command, env)


def wait_booted(
    process: subprocess.Popen[bytes],
    *,
    children: int = 0,
    path: Path | None = None,
    timeout: float = 120.0,
) -> None:
    """Wait until a started Celery process has booted: a worker once its ``children`` pool
    processes are forked (its parent forks them when Django and every task module are loaded),
    beat once it has written ``path`` (its schedule file). So a bench can start the services
    around the one it measures first, and their start-up (seconds of CPU on a 2-core machine)
    does not fall inside the measured window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a process of the stack exited with {process.returncode}")
        if children and len(child_pids(process.pid)) >= children:
            return
        if path is not None and any(f.stat().st_size for f in path.parent.glob(f"{path.name}*")):
            return  # (dbm may add a suffix to the name)
        time.sleep(0.1)
    raise SystemExit("a process of the stack did not finish starting in time")


def beat_schedule_path() -> Path:
    """Where :func:`start_beat` has beat keep its schedule."""
    return Path(_state["work"]) / "celerybeat-schedule"


def session_cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) used so far by ``process`` and every process of its session
    (a Celery worker and its pool): a figure a busy machine stretches far less than wall time.
    Linux only (``/proc``); 0.0 elsewhere."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After "pid (comm)": state ppid pgrp session ... utime(12) stime(13) cutime cstime
        if int(fields[3]) == process.pid:
            total += sum(int(value) for value in fields[11:15])
    return total / tick


def log_tail(name: str, size: int = 4000) -> str:
    try:
        return (_state["work"] / f"{name}.log").read_text(errors="replace")[-size:]
    except OSError:
        return ""


def stop_children() -> None:
    for process in _children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in _children:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    _children.clear()


def teardown(keep: bool = False) -> None:
    stop_children()
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    if not keep and "db_name" in _state:
        with contextlib.suppress(Exception):
            _admin_execute(f'DROP DATABASE IF EXISTS "{_state["db_name"]}" WITH (FORCE)')


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [load1, load5, load15]}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- CPU time per request: steadier than requests per second on a shared machine ------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    """The direct children of ``parent`` (a gunicorn master's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


def pg_backend_pids(db_name: str, application_name: str) -> list[int]:
    """The PostgreSQL server processes serving ``application_name``'s connections to
    ``db_name`` (the server runs on this machine, as the benches assume)."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [db_name, application_name],
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuMeter:
    """CPU seconds spent by a gunicorn master's workers and by their PostgreSQL backends
    between :meth:`start` and :meth:`stop`.

    Sampled every :data:`SAMPLE_EVERY` seconds meanwhile: a process that appears during the
    run (a backend replacing one whose connection reached ``CONN_MAX_AGE``, a restarted
    worker) counts from zero, and one that ends counts up to its last sample (reading only
    the processes present at both ends lost every backend replaced mid-run: a round whose
    connections all turned over read 0 ms of PostgreSQL CPU)."""

    SAMPLE_EVERY = 0.25

    def __init__(
        self,
        master_pid: int,
        db_name: str,
        application_name: str,
        access_log: Path | None = None,
    ) -> None:
        self.master_pid = master_pid
        self.db_name = db_name
        self.application_name = application_name
        #: Per side, each process's CPU seconds at its first and at its last sample.
        self._first: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        #: gunicorn's access log of request times (``%(D)s``, microseconds): the server-side
        #: latency of each request between start and stop, without the time it waited to be
        #: accepted (what wrk's latency adds when every worker is busy).
        self.access_log = access_log
        self._log_offset = 0
        self.server_ms: list[float] = []

    def _sample(self) -> dict[str, dict[int, float]]:
        web = {pid: _cpu_seconds(pid) for pid in child_pids(self.master_pid)}
        pids = pg_backend_pids(self.db_name, self.application_name)
        return {"web": web, "postgres": {pid: _cpu_seconds(pid) for pid in pids}}

    def _record(self, *, starting: bool) -> None:
        for side, found in self._sample().items():
            for pid, seconds in found.items():
                if pid not in self._first[side]:
                    # Present at the start: counted from there; born since: from zero.
                    self._first[side][pid] = seconds if starting else 0.0
                # CPU time only grows; a process gone between listing and reading reads 0.
                self._last[side][pid] = max(seconds, self._last[side].get(pid, 0.0))

    def _sample_until_stopped(self) -> None:
        while not self._stop_sampling.wait(self.SAMPLE_EVERY):
            try:
                self._record(starting=False)
            except Exception:  # noqa: S112 - a sample lost to a vanished process
                continue

    def start(self) -> None:
        if self.access_log is not None:
            self._log_offset = self.access_log.stat().st_size if self.access_log.exists() else 0
        self._first = {"web": {}, "postgres": {}}
        self._last = {"web": {}, "postgres": {}}
        self._record(starting=True)
        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._sampler.start()

    def stop(self) -> dict[str, float]:
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join()
        self._record(starting=False)
        if self.access_log is not None:
            time.sleep(0.2)  # the last requests' lines are flushed
            with self.access_log.open("rb") as handle:
                handle.seek(self._log_offset)
                lines = handle.read().split()
            self.server_ms = [int(line) / 1000 for line in lines if line.isdigit()]
        return {
            side: sum(
                max(0.0, self._last[side][pid] - first) for pid, first in self._first[side].items()
            )
            for side in ("web", "postgres")
        }


def with_application_name(database_url: str, name: str) -> str:
    """``database_url`` whose connections name themselves ``name`` in pg_stat_activity."""
    separator = "&" if "?" in database_url else "?"
    return f"{database_url}{separator}application_name={name}"
