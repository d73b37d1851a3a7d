"""The embedded run (scripts/devrun.py): web, the two workers, beat and the discord gateway come up on SQLite and
the SQLite broker, answer the health probes, restart a crashed child with back-off while the
others keep serving, and all stop on Ctrl-C leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration_support import WAIT_TIMEOUT

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"\[devrun\] started (?P<name>\w+) \(pid (?P<pid>\d+)\)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(var_dir: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DEBUG"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        MJGATE_VAR_DIR=str(var_dir),
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _group_members(pgid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def _wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; output:\n{log.read_text()[-4000:]}")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_devrun_serves_and_stops_everything_on_ctrl_c(tmp_path, stop_signal):
    """Ctrl-C, and closing the terminal (SIGHUP), stop all three and what they started."""
    var_dir = tmp_path / "var"
    port = _free_port()
    env = _environment(var_dir, port)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    log = tmp_path / "devrun.log"
    with log.open("wb") as out:
        devrun = subprocess.Popen(
            [sys.executable, "scripts/devrun.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children: dict[str, int] = {}
    try:

        def all_started() -> bool:
            children.update({m["name"]: int(m["pid"]) for m in STARTED.finditer(log.read_text())})
            return len(children) == 5

        _wait_for(all_started, WAIT_TIMEOUT, "five children", log)
        assert set(children) == {"web", "worker", "webhooks", "beat", "gateway"}
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _get(f"{base}/healthz")[0] == 200, WAIT_TIMEOUT, "/healthz", log)
        # The first probe opens the broker file while both workers and beat do the same.
        _wait_for(lambda: _get(f"{base}/readyz")[0] == 200, WAIT_TIMEOUT, "/readyz", log)
        status, body = _get(f"{base}/readyz")
        assert status == 200, body
        assert b'"broker": "ok"' in body
        # The embedded broker is a SQLite file under MJGATE_VAR_DIR, nowhere else.
        assert (var_dir / "broker.sqlite3").is_file()
        assert not (ROOT / "control").exists()
        _wait_for(
            lambda: log.read_text().count("ready.") >= 2,
            WAIT_TIMEOUT,
            "both workers to be ready",
            log,
        )

        # The banner comes again below the start-up output, where a newcomer looks.
        _wait_for(
            lambda: "all processes are up" in log.read_text(), WAIT_TIMEOUT, "the banner", log
        )
        text = log.read_text()
        last_start = max(m.end() for m in STARTED.finditer(text))
        assert text.index("all processes are up") > last_start

        # Everything each child started (Celery's pool too) is in that child's process group.
        processes = set(children.values())
        for pid in children.values():
            processes |= _group_members(pid)
        assert len(processes) > 3  # the worker's pool processes are included
        assert all(_alive(pid) for pid in processes)

        devrun.send_signal(stop_signal)
        assert devrun.wait(timeout=20) == 0
        output = log.read_text()
        for name in ("web", "worker", "webhooks", "beat", "gateway"):
            assert f"[devrun] {name} stopped" in output
        assert "did not stop" not in output
        assert "restarting it" not in output  # nothing crashed on its own
        assert "No hostname was supplied" not in output
        _wait_for(
            lambda: not any(_alive(pid) for pid in processes), WAIT_TIMEOUT, "processes to go", log
        )
        assert _get(f"{base}/healthz")[0] == 0
    finally:
        if devrun.poll() is None:
            devrun.kill()
            devrun.wait()
        # Whatever happened above, leave no server or worker behind.
        for pid in children.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_devrun_restarts_a_crashed_child_with_back_off_and_keeps_serving(tmp_path):
    """A worker killed from outside (or crashing) comes back; web never stops answering."""
    var_dir = tmp_path / "var"
    port = _free_port()
    env = _environment(var_dir, port)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    log = tmp_path / "devrun.log"
    with log.open("wb") as out:
        devrun = subprocess.Popen(
            [sys.executable, "scripts/devrun.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pids: list[int] = []
    try:
        _wait_for(lambda: len(STARTED.findall(log.read_text())) == 5, 10, "five children", log)
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _get(f"{base}/healthz")[0] == 200, 15, "/healthz", log)
        for crash in (1, 2):
            starts = {m["name"]: int(m["pid"]) for m in STARTED.finditer(log.read_text())}
            pids.extend(starts.values())
            os.killpg(starts["worker"], signal.SIGKILL)
            _wait_for(
                lambda crash=crash: f"(crash {crash} in a row)" in log.read_text(),
                10,
                "the crash to be noticed",
                log,
            )
            line = [ln for ln in log.read_text().splitlines() if f"(crash {crash} in a row)" in ln]
            assert line[0].startswith(f"[devrun] worker (pid {starts['worker']}) exited with code")
            assert f"restarting it in {2 ** (crash - 1):g}s" in line[0]
            assert _get(f"{base}/healthz")[0] == 200  # web kept serving
            _wait_for(
                lambda crash=crash: len(STARTED.findall(log.read_text())) == 5 + crash,
                10,
                "the worker to be restarted",
                log,
            )
        assert devrun.poll() is None
        devrun.send_signal(signal.SIGINT)
        assert devrun.wait(timeout=30) == 0
    finally:
        if devrun.poll() is None:
            devrun.kill()
            devrun.wait()
        for match in STARTED.finditer(log.read_text()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(match["pid"]), signal.SIGKILL)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_children_stop_when_devrun_is_killed_outright():
    """SIGKILL leaves devrun no chance to stop its children: they are sent SIGTERM by the
    kernel (the parent-death signal devrun sets in each), so none keeps the port."""
    code = (
        "import sys, time\n"
        "sys.path.insert(0, 'scripts')\n"
        "from devrun import Child\n"
        "child = Child('sleeper', [sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "child.start()\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        lines = []
        while not (lines and lines[-1].strip().isdigit()):
            line = parent.stdout.readline()
            assert line, "devrun's child was not started"
            lines.append(line)
        child = int(lines[-1])
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.1)
        assert not _alive(child), "the child outlived devrun's SIGKILL"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) is gone for our purpose.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True
