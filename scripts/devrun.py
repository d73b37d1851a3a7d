"""Run web, the workers, beat and the discord gateway together in the foreground; stop them all on Ctrl-C.

A child that exits on its own is restarted, after a back-off that doubles with each quick
crash (1 s, 2 s, 4 s … at most :data:`MAX_BACKOFF`), with a log line that says which one,
how it ended and when it comes back; the others keep serving meanwhile. Each child runs in its
own process group; whatever is left of a dead child's group (Celery's pool) is killed before it
is restarted, and on the way out every group is killed as a whole, so nothing outlives us.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PORT = os.environ.get("PORT", "8000")
VAR = Path(os.environ.get("MJGATE_VAR_DIR", ROOT / "var"))
#: Seconds the children get to shut down cleanly before they are killed.
STOP_TIMEOUT = float(os.environ.get("DEVRUN_STOP_TIMEOUT", "15"))
#: Seconds before the first restart of a crashed child; doubled for each crash in a row.
FIRST_BACKOFF = float(os.environ.get("DEVRUN_RESTART_BACKOFF", "1"))
MAX_BACKOFF = 30.0
#: A child that ran this long before it exited counts as healthy: its back-off starts over.
HEALTHY_AFTER = 60.0
WEBHOOKS_QUEUE = os.environ.get("CELERY_WEBHOOKS_QUEUE") or "webhooks"
#: The engine-jobs queue and its results queue (named as config/settings/base.py names them).
TASKS_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE") or "mjgate"
RESULTS_QUEUE = os.environ.get("CELERY_RESULTS_QUEUE") or f"{TASKS_QUEUE}-results"
#: Gossip and mingle are of no use here, and kombu's reconnect defect lives in them. Celery
#: runs through config/celery_cli.py: its command line without click-repl and pygments.
WORKER_OPTIONS = ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]

PROCESSES = {
    "web": [PY, "manage.py", "runserver", f"127.0.0.1:{PORT}", "--noreload"],
    # Engine jobs and the safety nets (the default queue), and here also the results queue
    # (making and storing results after a job's slot is free); compose gives that its own
    # low-priority worker.
    "worker": [
        PY,
        "-m",
        "config.celery_cli",
        "-A",
        "config",
        "worker",
        *WORKER_OPTIONS,
        "--queues",
        f"{TASKS_QUEUE},{RESULTS_QUEUE}",
        "--concurrency",
        "2",
        "--hostname",
        "worker@%h",
    ],
    # Webhook deliveries only: they never wait behind an engine job.
    "webhooks": [
        PY,
        "-m",
        "config.celery_cli",
        "-A",
        "config",
        "worker",
        *WORKER_OPTIONS,
        "--queues",
        WEBHOOKS_QUEUE,
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--hostname",
        "webhooks@%h",
    ],
    "beat": [
        PY,
        "-m",
        "config.celery_cli",
        "-A",
        "config",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(VAR / "celerybeat-schedule"),
    ],
    # The discord engine's WebSockets (leased per account); idles while no discord account exists.
    "gateway": [PY, "manage.py", "discord_gateway"],
}


def _exit_code(pid: int) -> int | None:
    """The child's exit code once it has exited, else None. Does not reap it.

    Leaving the exited child unreaped keeps its pid, and so its process group id, from being
    reused until we have killed whatever is left in that group.
    """
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


#: Linux's ``prctl`` option that sends the calling process a signal when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_devrun(devrun: int = os.getpid()) -> None:
    """In a child, between fork and exec: be sent SIGTERM when devrun dies, however it dies
    (SIGKILL included, where devrun cannot stop its children itself), so no web server or
    worker is left holding the port. Linux only; elsewhere a no-op. The signal survives the
    exec and the Celery processes' re-exec under ``-OO``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != devrun:  # devrun died before the line above: the signal never comes
        os._exit(1)


class Child:
    """One supervised process and its restart bookkeeping."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.crashes_in_a_row = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        # Own process group, so the terminal's Ctrl-C reaches only us and we stop the
        # children in order instead of each of them dying on its own.
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_die_with_devrun if sys.platform == "linux" else None,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        print(f"[devrun] started {self.name} (pid {self.process.pid})", flush=True)

    def reap(self) -> int | None:
        """If the child has exited: clean up its group, schedule its restart, return its code."""
        if self.process is None or self.restart_at is not None:
            return None
        code = _exit_code(self.process.pid)
        if code is None:
            return None
        _kill_group(self.process.pid)
        self.process.wait()
        ran = time.monotonic() - self.started_at
        self.crashes_in_a_row = 1 if ran >= HEALTHY_AFTER else self.crashes_in_a_row + 1
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self.crashes_in_a_row - 1))
        self.restart_at = time.monotonic() + delay
        print(
            f"[devrun] {self.name} (pid {self.process.pid}) exited with code {code} after "
            f"{ran:.0f}s; restarting it in {delay:g}s (crash {self.crashes_in_a_row} in a row)",
            flush=True,
        )
        return code

    def due(self) -> bool:
        return self.restart_at is not None and time.monotonic() >= self.restart_at


#: Seconds after the web server first answers before the banner is printed (the workers' start-up
#: output comes in the meantime); at most BANNER_WAIT after the start in any case.
BANNER_SETTLE = float(os.environ.get("DEVRUN_BANNER_SETTLE", "4"))
BANNER_WAIT = 60.0


def _web_answers() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


class Banner:
    """The demo banner (logins, keys, the mailbox) printed by seed_demo before the processes
    start scrolls away under their start-up output: print it again once they are all up."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.web_up_at: float | None = None
        self.shown = False

    def tick(self) -> None:
        if self.shown:
            return
        now = time.monotonic()
        if self.web_up_at is None and _web_answers():
            self.web_up_at = now
        settled = self.web_up_at is not None and now - self.web_up_at >= BANNER_SETTLE
        if settled or now - self.started >= BANNER_WAIT:
            self.shown = True
            self.show()

    @staticmethod
    def show() -> None:
        path = VAR / "demo-banner.txt"
        text = path.read_text(encoding="utf-8").strip("\n") if path.exists() else ""
        rule = "=" * 72
        lines = [rule, text or f"mjgate is running: http://127.0.0.1:{PORT}/", rule]
        lines.append("[devrun] all processes are up - press Ctrl-C to stop")
        print("\n".join(["", *lines, ""]), flush=True)


def main() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    children = [Child(name, command) for name, command in PROCESSES.items()]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # SIGHUP too: closing the terminal must not leave the children (each in its own session,
    # so the terminal's hangup never reaches them) running and holding the port.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        for child in children:
            child.start()
        print(f"[devrun] serving http://127.0.0.1:{PORT}/ - press Ctrl-C to stop", flush=True)
        banner = Banner()
        while not stopping:
            banner.tick()
            for child in children:
                child.reap()
                if child.due() and not stopping:
                    child.start()
            time.sleep(0.3)
    finally:
        running = [c.process for c in children if c.process is not None and c.restart_at is None]
        # SIGTERM to each main process only: Celery then shuts its own pool down in order
        # (signalling the whole group would kill the pool under it and log errors).
        for process in running:
            if _exit_code(process.pid) is None:
                # os.kill, not Popen.send_signal: the latter reaps an exited child first.
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(_exit_code(p.pid) is None for p in running):
            time.sleep(0.1)
        for child in children:
            process = child.process
            if process is None:
                continue
            if child.restart_at is None:
                if _exit_code(process.pid) is None:
                    print(
                        f"[devrun] {child.name} did not stop in {STOP_TIMEOUT:g}s; killing it",
                        flush=True,
                    )
                _kill_group(process.pid)
                process.wait()
            print(f"[devrun] {child.name} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
