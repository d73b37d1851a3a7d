"""Run web, worker and beat together in the foreground; stop them all on Ctrl-C.

If any of the three exits, the others are stopped too, so a broken process is never hidden
behind two healthy-looking ones. Each child runs in its own process group; on the way out the
group is killed as a whole, so nothing a child started (Celery's pool) outlives us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PORT = os.environ.get("PORT", "8000")
VAR = Path(os.environ.get("MJGATE_VAR_DIR", ROOT / "var"))
#: Seconds the children get to shut down cleanly before they are killed.
STOP_TIMEOUT = float(os.environ.get("DEVRUN_STOP_TIMEOUT", "15"))

PROCESSES = {
    "web": [PY, "manage.py", "runserver", f"127.0.0.1:{PORT}", "--noreload"],
    "worker": [
        PY,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--hostname",
        "worker@%h",
    ],
    "beat": [
        PY,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(VAR / "celerybeat-schedule"),
    ],
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


def main() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # SIGHUP too: closing the terminal must not leave the children (each in its own session,
    # so the terminal's hangup never reaches them) running and holding the port.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    exit_code = 0
    try:
        for name, cmd in PROCESSES.items():
            # Own process group, so the terminal's Ctrl-C reaches only us and we stop the
            # children in order instead of each of them dying on its own.
            children[name] = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
            print(f"[devrun] started {name} (pid {children[name].pid})", flush=True)
        print(f"[devrun] serving http://127.0.0.1:{PORT}/ - press Ctrl-C to stop", flush=True)
        while not stopping:
            for name, child in children.items():
                code = _exit_code(child.pid)
                if code is not None:
                    print(f"[devrun] {name} exited with {code}; stopping the others", flush=True)
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.3)
    finally:
        # SIGTERM to each main process only: Celery then shuts its own pool down in order
        # (signalling the whole group would kill the pool under it and log errors).
        for child in children.values():
            if _exit_code(child.pid) is None:
                # os.kill, not Popen.send_signal: the latter reaps an exited child first.
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(
            _exit_code(child.pid) is None for child in children.values()
        ):
            time.sleep(0.1)
        for name, child in children.items():
            if _exit_code(child.pid) is None:
                print(f"[devrun] {name} did not stop in {STOP_TIMEOUT:g}s; killing it", flush=True)
            _kill_group(child.pid)
            child.wait()
            print(f"[devrun] {name} stopped", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
