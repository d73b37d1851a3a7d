"""Run web, worker and beat together in the foreground; stop them all on Ctrl-C.

If any of the three exits, the others are stopped too, so a broken process is never hidden
behind two healthy-looking ones.
"""

from __future__ import annotations

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


def main() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, cmd in PROCESSES.items():
        # Own process group, so the terminal's Ctrl-C reaches us first and we stop them in order.
        children[name] = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
        print(f"[devrun] started {name} (pid {children[name].pid})", flush=True)
    exit_code = 0
    try:
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    print(f"[devrun] {name} exited with {code}; stopping the others", flush=True)
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.3)
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, child in children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            print(f"[devrun] {name} stopped", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
