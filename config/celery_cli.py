"""Celery's command line without its interactive extras: ``python -m config.celery_cli``.

It takes what ``celery`` takes and runs the same commands; the worker processes are started
with it (``python -m config.celery_cli -A config worker ...``: docker/compose.yml,
scripts/devrun.py, bench/_stack.py). Celery's command line imports, before it knows which
subcommand runs, what every subcommand might use: click-repl for ``celery amqp repl``
(prompt_toolkit, wcwidth's tables, asyncio: about 6 MiB) and pygments for coloured output
(about 1.5 MiB). A worker uses neither, and a prefork worker's pool processes are forks of a
parent that holds them, each counting them again: about 38 MiB of a 4-process worker's
resident memory (issue 15, P6). Here ``amqp repl`` says to use ``celery`` for it, and output
is not coloured (celery's own fallback when pygments is missing). Everything else is celery's.

A process started so restarts itself once (same pid, arguments and environment) under
``python -OO`` with ``MJGATE_CELERY_PROCESS=1`` set, so that ``config/__init__.py`` leaves the
extras out before Celery and kombu are imported, and Django the apps' admin modules
(:func:`leave_out_extras`, :func:`restart_as_celery_process`).

Not for the eventlet or gevent pools, which must patch the standard library before anything
is imported and need greenlet; mjgate's workers use prefork and threads.
"""

from __future__ import annotations

import os
import sys
import types

import click

#: Set (to "1") in the processes this module starts; read by ``config/__init__.py`` (which
#: then calls :func:`leave_out_extras` before Celery is imported) and ``apps/operator/apps.py``
#: (no admin modules).
CELERY_PROCESS_ENV = "MJGATE_CELERY_PROCESS"

#: What these processes never use although celery imports it when it is installed: greenlet
#: (and the C++ runtime it links, about 1 MiB of the parent) for the eventlet and gevent
#: pools; without it celery uses thread identities, as where it is not installed. pygments:
#: celery.bin.base imports it in a try block and prints plain text without it. (PyYAML,
#: which kombu imports for a serializer JSON-only ``accept_content`` never uses, stays:
#: the URLconf, which a task that reverses a URL loads, needs it through drf-spectacular.)
NOT_IMPORTED = ("greenlet", "pygments")


def _repl_refused() -> types.ModuleType:
    """A ``click_repl`` whose ``repl`` subcommand says where the real one is."""
    module = types.ModuleType("click_repl")

    def register_repl(group: click.Group, name: str = "repl") -> None:
        @group.command(name=name)
        def repl() -> None:
            """The interactive shell: run it with ``celery`` instead."""
            raise click.UsageError(
                "The interactive shell is not part of this entry point "
                "(python -m config.celery_cli); run `celery -A config amqp repl`."
            )

    module.register_repl = register_repl  # type: ignore[attr-defined]
    return module


def leave_out_extras() -> None:
    """Keep this process from importing click-repl, pygments and greenlet.

    Must run before Celery and kombu are imported (``config/__init__.py`` calls it first in
    a process this module started); a no-op for modules already imported.
    """
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    sys.modules.setdefault("click_repl", _repl_refused())


def restart_as_celery_process() -> None:
    """Run this process again under ``python -OO`` with ``MJGATE_CELERY_PROCESS=1``, unless
    it already runs so.

    The variable makes ``config/__init__.py`` call :func:`leave_out_extras` before the
    ``config`` package imports Celery (which a ``-m config.celery_cli`` start does before this
    module runs), and Django skip the apps' admin modules (apps/operator/apps.py): no Celery
    process serves an admin page.

    ``-OO`` drops docstrings: about 4 MiB of the code objects a worker loads (Django, Celery,
    kombu, redis-py's command mixins, the apps), held by the parent and counted again in each
    prefork pool process's RSS (issue 15, P6); no worker reads them (``--help`` texts of
    celery's own subcommands come out shorter). It also drops ``assert`` statements: ours
    narrow types, the libraries' check their own invariants, none guards input. It loads
    ``.opt-2.pyc`` caches, which ``scripts/bootstrap.sh`` and ``docker/Dockerfile`` compile
    (pip writes only the plain ones, and processes that may not write caches would otherwise
    compile every module from source at each start).

    The process is replaced (same pid, arguments and environment), so supervisors see no
    difference; the second start costs the interpreter's start-up once.
    """
    if sys.flags.optimize >= 2 and os.environ.get(CELERY_PROCESS_ENV) == "1":
        return
    os.environ[CELERY_PROCESS_ENV] = "1"
    # The same command line, this interpreter, the flag added: nothing from outside.
    os.execv(sys.executable, [sys.executable, "-OO", *sys.orig_argv[1:]])  # noqa: S606


def main() -> None:
    restart_as_celery_process()
    leave_out_extras()
    from celery.bin.celery import main as celery_main

    sys.exit(celery_main())


if __name__ == "__main__":
    main()
