"""Celery application. PostgreSQL is the source of truth; the broker only says there is work."""

from __future__ import annotations

import ctypes
import gc
import os
import select
import sys
from typing import Any

import redis.exceptions
from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init
from kombu.transport import redis as kombu_redis

from config.priority import lower_priority

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
# Celery's Django fixup runs Django's system checks when a worker starts and ignores what they
# find; the URL checks import the whole URLconf (every view, DRF, drf-spectacular, allauth's
# MFA, Stripe), about 9 MiB in every worker process that no task uses (issue 15, P6). The
# checks run where they are acted on: ``manage.py check`` / ``migrate`` at deploy.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")
# httpx's package imports its command-line client when it can (click, rich and pygments: about
# 4 MiB of Python objects in every web and worker process; issue 15, P6); without it, httpx
# falls back to a stub ``main`` that says the CLI is not installed. Nothing here runs it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _survive_closed_connections() -> None:
    """Work around a kombu 5.7 defect that ends a worker on a Redis restart.

    While the consumer reconnects, a channel of the closed connection (gossip, heartbeat,
    pidbox) may still ask for a new Redis client; its ``connection.client`` is already None, and
    ``_connparams`` fails with "AttributeError: 'NoneType' object has no attribute 'hostname'".
    Celery treats an AttributeError as unrecoverable and exits (with code 0). Raising the
    transport's own connection error instead makes it what it is, a lost connection, which
    Celery recovers from by reconnecting. The worker commands also run without gossip and
    mingle, the steps that hit it most (we use neither).
    """
    original = kombu_redis.Channel._connparams
    if getattr(original, "_mjgate_guarded", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        connection = getattr(self, "connection", None)
        if connection is None or getattr(connection, "client", None) is None:
            raise redis.exceptions.ConnectionError(
                "The broker connection was closed while a channel still used it."
            )
        return original(self, asynchronous=asynchronous)

    _connparams._mjgate_guarded = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


_survive_closed_connections()

#: ``prctl`` option that sets the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def _pdeathsig_through_ctypes() -> None:
    """Set a pool process's parent-death signal through ctypes instead of cffi.

    Each prefork pool process asks for SIGKILL when the worker dies (celery's
    ``process_initializer``). billiard does it through cffi whenever cffi is importable (it
    is, for ``cryptography``), and cffi first parses the C declaration of ``prctl`` with
    pycparser, building its parser tables: about 3 MiB in every pool process, for one system
    call (issue 15, P6). The same call through ctypes, which this module loads anyway, costs
    nothing. Linux only, as billiard's is: elsewhere billiard's own refusal stays.
    """
    import celery.platforms

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def _set_pdeathsig(signum: int) -> None:
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    celery.platforms._set_pdeathsig = _set_pdeathsig


_pdeathsig_through_ctypes()


def _keep_database_connections() -> None:
    """Keep a pool process's database connection from one task to the next, as Django keeps a
    web worker's from one request to the next (``CONN_MAX_AGE``).

    Celery's Django fixup (5.x) closes every database connection before and after each task,
    whatever ``CONN_MAX_AGE`` says: each poll or start step then opened a new PostgreSQL
    connection (a backend forked, authentication, cold catalog caches, every prepared
    statement prepared again): about a seventh of a pool process's time in the P2 profile
    (issue 15). Here the fixup closes only what Django itself would at the end of a request:
    a connection past its age, one left in a transaction, or one that failed and no longer
    answers. A kept connection the server closed is dropped before the next task
    (``_drop_broken_connections``), so a PostgreSQL restart costs no task."""
    from celery.fixups import django as celery_django

    def close_database(self: Any, **_: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()

    celery_django.DjangoWorkerFixup.close_database = close_database


_keep_database_connections()

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The task pipeline's entry points live in a module named for what it is (apps/tasks/workers.py).
app.autodiscover_tasks(related_name="workers")


@worker_init.connect
def _lower_priority(**_: Any) -> None:
    """A worker started with ``CELERY_WORKER_NICE`` (the results worker) runs at that lower
    CPU priority, and so do its pool processes: storing results must not take the CPU from
    the starts, polls and dispatches that keep upstream slots busy. Leading its own session,
    it lowers the session's autogroup too (config/priority.py), without which its nice value
    weighs only against its own session's processes."""
    lower_priority(int(os.environ.get("CELERY_WORKER_NICE") or 0))


@task_prerun.connect
def _drop_broken_connections(**_: Any) -> None:
    """A pool process keeps its database connection between tasks (see
    ``_keep_database_connections``); before each task it drops one the server has closed (a
    PostgreSQL restart, an administrator's terminate): its socket then reads as ready (the
    server's goodbye, or end of file) while a healthy idle connection has nothing to read. No
    round trip, unlike Django's ``CONN_HEALTH_CHECKS`` (a ``SELECT 1`` per task); a connection
    dropped for a stray notice only costs a reconnect."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None or connection.vendor != "postgresql":
            continue
        try:
            broken = raw.closed or bool(select.select([raw.fileno()], [], [], 0)[0])
        except (OSError, ValueError):
            broken = True
        if broken:
            connection.close()


@worker_init.connect
def _share_boot_memory(**_: Any) -> None:
    """Before the pool forks: keep what the worker has loaded (Django, the apps, Pillow's
    plugins we use) out of the garbage collector's reach, so a child's collections do not
    write to (and so copy) the pages it shares with this parent (issue 15, P6). Then give the
    heap's free pages (what the imports left behind, about 2 MiB) back to the system: every
    page the parent still holds at the fork is counted again in each pool process's RSS."""
    gc.collect()
    gc.freeze()
    if _malloc_trim is not None:
        _malloc_trim(0)
    _fixed_mmap_threshold()


def _libc_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_malloc_trim = _libc_malloc_trim()

#: ``mallopt`` parameter of glibc's mmap threshold (malloc.h).
M_MMAP_THRESHOLD = -3
#: Allocations from this size up get their own mapping, given back to the system when freed.
MMAP_THRESHOLD_BYTES = 128 * 1024


def _fixed_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at its 128 KiB default in the worker and its pool.

    glibc raises the threshold to the size of each mapped block freed (up to 32 MiB), so
    after a pool process's first pictures (image buffers of several MiB), later ones came from
    the heap instead, and the heap stayed ~8 MiB larger for good in each pool process that
    made pictures: what malloc_trim cannot give back, scattered among live objects. Setting
    the threshold turns the raising off; a buffer this large is mapped and unmapped (a
    syscall each, next to milliseconds of image work). Set in the parent before the pool
    forks: the pool processes inherit it (issue 15, P6). glibc only.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


@task_postrun.connect
def _return_freed_memory(**_: Any) -> None:
    """After each task, give the heap's free pages back to the system. Pillow's image buffers
    (several MiB per picture) are freed when a result is made, but glibc keeps the pages, so
    a pool process that made one picture stayed ~11 MiB larger for good; trimming costs a few
    microseconds when there is nothing to give back (issue 15, P6)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
