"""CPU priority of a low-priority worker (the results worker: ``CELERY_WORKER_NICE``).

A process's nice value alone does not lower it against every other process. Linux's autogroup
scheduling (``kernel.sched_autogroup_enabled``, on by default in most kernels, this machine's
and CI's included) shares the CPU between sessions first, and only then between the processes
of each session by their nice values: a results worker started in its own session (as
``scripts/devrun.py``, the benches and any process supervisor start each service) got half the
CPU against the engine worker's session whatever its nice value, and its image work took the
CPU from the polls and starts that keep upstream slots busy (issue 15, P2: slot utilisation
0.958 with the results worker at nice 10 in its own session, 0.970 with its session lowered too,
0.976 with no results worker at all; ``bench/dispatch.py``).

So a worker that leads its own session lowers its session's autogroup as well. One that shares
its session with other processes (started from a shell without job control, say) leaves the
autogroup alone: that would lower the others too. Containers are outside autogroup (it applies
only to processes in the root CPU cgroup); there the container's CPU weight decides
(``cpu_shares`` in ``docker/compose.yml``).
"""

from __future__ import annotations

import errno
import logging
import os
import time

logger = logging.getLogger(__name__)

#: The calling process's autogroup (``/autogroup-ID nice N`` when read); writing N sets its nice
#: value. It reads empty when the process is in no autogroup (outside the root CPU cgroup: a
#: container, a systemd service's slice), where only the process's own nice value applies.
AUTOGROUP = "/proc/self/autogroup"


def in_autogroup() -> bool:
    """Whether this process is scheduled in an autogroup (see :data:`AUTOGROUP`)."""
    try:
        with open(AUTOGROUP) as autogroup:
            return bool(autogroup.read().strip())
    except OSError:
        return False  # no autogroup scheduling in this kernel


def lower_priority(nice: int) -> str:
    """Lower this process (and the processes it forks later) by ``nice``; see the module's
    docstring. Returns what was lowered: ``"process"`` or ``"process and session"``."""
    if nice <= 0:
        return "nothing"
    os.nice(nice)
    if os.getsid(0) != os.getpid() or not in_autogroup():
        return "process"
    for attempt in range(3):
        try:
            with open(AUTOGROUP, "w") as autogroup:
                autogroup.write(str(nice))
            return "process and session"
        except OSError as error:
            # The kernel lets an unprivileged process change an autogroup's nice value at most
            # every 100 ms, machine-wide (EAGAIN): another worker starting at the same moment.
            if error.errno == errno.EAGAIN and attempt < 2:
                time.sleep(0.11)
                continue
            # Not an error: the nice value holds inside the session (and in a container, where
            # the container's CPU weight decides, autogroup does not apply at all).
            logger.info(
                "could not lower this worker's session priority (%s): its nice value holds "
                "only against processes of its own session",
                error,
            )
            return "process"
    return "process"  # pragma: no cover - the loop returns
