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

Not for the eventlet or gevent pools, which must patch the standard library before anything
is imported (the ``config`` package has imported Celery and Redis by the time this runs);
mjgate's workers use prefork and threads.
"""

from __future__ import annotations

import os
import sys
import types

import click

#: Read by apps/operator/apps.py: "0" keeps Django from importing the apps' admin modules.
ADMIN_MODULES_ENV = "MJGATE_ADMIN_MODULES"

#: What celery's command line imports only for the interactive extras a worker never uses.
LEFT_OUT = ("click_repl", "pygments")


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
    """Keep celery's command line from importing click-repl and pygments in this process, and
    Django from importing the apps' admin modules (apps/operator/apps.py): no Celery process
    serves an admin page.

    Must run before ``celery.bin`` is imported and Django is set up; a no-op for modules
    already imported.
    """
    os.environ.setdefault(ADMIN_MODULES_ENV, "0")
    sys.modules.setdefault("click_repl", _repl_refused())
    # celery.bin.base imports pygments in a try block and prints plain text without it.
    sys.modules.setdefault("pygments", None)  # type: ignore[arg-type]


def without_docstrings() -> None:
    """Run this process again under ``python -OO`` unless it already runs so.

    Docstrings are about 4 MiB of the code objects a worker loads (Django, Celery, kombu,
    redis-py's command mixins, the apps), held by the parent and counted again in each prefork
    pool process's RSS (issue 15, P6); no worker reads them (``--help`` texts of celery's own
    subcommands come out shorter). ``-OO`` also drops ``assert`` statements: ours narrow
    types, the libraries' check their own invariants, none guards input. The same process
    (same pid, arguments and environment) is replaced, so supervisors see no difference; the
    second start costs the interpreter's start-up once. Python writes ``.opt-2.pyc`` caches
    beside the usual ones.
    """
    if sys.flags.optimize >= 2:
        return
    # The same command line, this interpreter, the flag added: nothing from outside.
    os.execv(sys.executable, [sys.executable, "-OO", *sys.orig_argv[1:]])  # noqa: S606


def main() -> None:
    without_docstrings()
    leave_out_extras()
    from celery.bin.celery import main as celery_main

    sys.exit(celery_main())


if __name__ == "__main__":
    main()
