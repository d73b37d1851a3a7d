"""The results worker's lower CPU priority holds against other sessions (config/priority.py).

Under Linux's autogroup scheduling a process's nice value only weighs against the processes of
its own session; the results worker, started in a session of its own, lowers that session's
autogroup too, or its image work keeps half the CPU against the engine worker (issue 15, P2).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration_support import Worker, celery_worker_factory  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _autogroup_scheduling() -> bool:
    """Whether the kernel schedules by autogroup: a new session gets an autogroup of its own
    (a process that never left the first session reads an empty ``/proc/self/autogroup``)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


needs_autogroup = pytest.mark.skipif(
    not _autogroup_scheduling(), reason="the kernel has no autogroup scheduling"
)

_PROBE = (
    "import os; from config.priority import lower_priority; "
    "print(lower_priority({nice})); print(os.getpriority(os.PRIO_PROCESS, 0)); "
    "print(open('/proc/self/autogroup').read().split()[-1])"
)


def _probe(nice: int, *, own_session: bool) -> list[str]:
    """Run the probe in a new session: as its leader, or as a child of the session's leader (a
    shell), which then prints its own autogroup's nice value after the probe."""
    probe = [sys.executable, "-c", _PROBE.format(nice=nice)]
    if not own_session:
        probe = ["sh", "-c", '"$@"; cut -d" " -f3 /proc/$$/autogroup', "sh", *probe]
    done = subprocess.run(
        probe,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=True,
    )
    return done.stdout.split("\n")[:4]


def _autogroup_nice(pid: int | str) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def _process_nice(pid: int) -> int:
    # /proc/PID/stat: the 19th field is the nice value (after the command's closing paren).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


@needs_autogroup
def test_a_session_leader_lowers_its_session_as_well_as_itself() -> None:
    what, process_nice, session_nice, _ = _probe(7, own_session=True)
    assert what == "process and session"
    assert int(process_nice) == 7
    assert int(session_nice) == 7


@needs_autogroup
def test_a_process_sharing_its_session_lowers_only_itself() -> None:
    what, process_nice, session_nice, leader_after = _probe(7, own_session=False)
    assert what == "process"
    assert int(process_nice) == 7
    # The session (its leader's, a shell's) keeps its priority: lowering it would lower the
    # shell too.
    assert int(session_nice) == 0
    assert int(leader_after) == 0


def test_a_leader_in_no_autogroup_lowers_only_itself(tmp_path: Path) -> None:
    """A process outside every autogroup (its ``/proc/self/autogroup`` reads empty: it never
    left the first session, or it runs in a CPU cgroup of its own) has no session priority to
    lower; writing the file would not do what the worker means."""
    empty = tmp_path / "autogroup"
    empty.write_text("")
    probe = (
        "import os, config.priority as priority; "
        f"priority.AUTOGROUP = {str(empty)!r}; "
        "print(priority.in_autogroup()); print(priority.lower_priority(7)); "
        "print(os.getpriority(os.PRIO_PROCESS, 0))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=True,
    )
    assert done.stdout.split() == ["False", "process", "7"]
    assert empty.read_text() == ""


def test_no_nice_changes_nothing() -> None:
    what, process_nice, *_ = _probe(0, own_session=True)
    assert what == "nothing"
    assert int(process_nice) == 0


@needs_autogroup
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_results_worker_and_its_pool_processes_run_in_a_lowered_session(
    celery_worker_factory: Callable[..., Worker],  # noqa: F811
) -> None:
    """A real prefork worker with ``CELERY_WORKER_NICE`` (as compose runs the results worker,
    in its own session as every service is started): the parent and its pool process are at
    that nice value, and so is their session's autogroup."""
    worker = celery_worker_factory(pool="prefork", concurrency=1, CELERY_WORKER_NICE=10)
    parent = worker.process.pid
    children_file = Path(f"/proc/{parent}/task/{parent}/children")
    deadline = time.monotonic() + 60
    children: list[str] = []
    while time.monotonic() < deadline and not children:
        children = children_file.read_text().split()
        time.sleep(0.1)
    assert children, worker.log()
    for pid in (parent, int(children[0])):
        assert _process_nice(pid) == 10
        assert _autogroup_nice(pid) == 10
