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
extras out before Celery and kombu are imported (and the ``__init__`` of a few packages, such
as redis-py's asyncio client, until something uses them: :data:`DEFERRED`), and Django the
apps' admin modules (:func:`leave_out_extras`, :func:`restart_as_celery_process`).

Not for the eventlet or gevent pools, which must patch the standard library before anything
is imported and need greenlet; mjgate's workers use prefork and threads.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
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

#: Packages whose ``__init__`` runs on first use of one of its names, not when imported (their
#: submodules load as usual when imported). Each would otherwise be held by a worker's parent
#: and counted again in each prefork pool process's RSS (issue 15, P6):
#:
#: - ``redis.asyncio``: ``redis/__init__.py`` imports it, and its ``__init__`` the whole
#:   asyncio client (connection, cluster, sentinel, keyspace notifications): about 1.3 MiB.
#:   Every Redis client here (kombu's, Django's cache, the dispatch scripts) is the
#:   synchronous one; redis-py's own modules import a few of its submodules.
#: - ``django.contrib.admin``: the admin app's models (``LogEntry``) and app config load, but
#:   not its ``__init__``'s ModelAdmin, filters, widgets and sites (about 0.7 MiB) until
#:   something reads ``admin.site`` or the like: the URLconf does, if a task loads it.
#: - ``sqlparse`` (its lexer, filters and command line: about 0.5 MiB), which Django's
#:   database operations import for the SQL scripts of migrations and ``sqlflush``.
#: - ``django.views``, whose ``__init__`` imports the generic class-based views; the error
#:   reporter of Django's logging imports ``django.views.debug``, a submodule.
DEFERRED = ("redis.asyncio", "django.contrib.admin", "sqlparse", "django.views")


class _DeferredInit(importlib.abc.Loader):
    """Makes a package whose ``__init__`` runs when a name is first read from it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        loader = self.loader
        # A thread pool's threads may read their first name from it at the same time: the
        # others wait until the __init__ has run (the hook stays until then).
        lock = threading.RLock()
        running = False

        def __getattr__(name: str) -> object:
            # Called for names the module does not have (yet): run the real __init__ once,
            # then answer as the module now does.
            nonlocal running
            with lock:
                if module.__dict__.get("__getattr__") is __getattr__:
                    if running:  # the __init__ itself, asking for a name not set yet
                        raise AttributeError(
                            f"module {module.__name__!r} has no attribute {name!r}"
                        )
                    running = True
                    try:
                        loader.exec_module(module)
                    finally:
                        running = False
                    # Unless the __init__ set a __getattr__ of its own.
                    if module.__dict__.get("__getattr__") is __getattr__:
                        del module.__getattr__
            return getattr(module, name)

        module.__getattr__ = __getattr__  # type: ignore[method-assign]


class _DeferredInitFinder(importlib.abc.MetaPathFinder):
    """Finds the :data:`DEFERRED` packages as usual and defers their ``__init__``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in DEFERRED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _DeferredInit(spec.loader)
        return spec


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
    """Keep this process from importing click-repl, pygments and greenlet, and defer the
    ``__init__`` of :data:`DEFERRED` packages to their first use.

    Must run before Celery, kombu and redis-py are imported (``config/__init__.py`` calls it
    first in a process this module started); a no-op for modules already imported.
    """
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    sys.modules.setdefault("click_repl", _repl_refused())
    if not any(isinstance(finder, _DeferredInitFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DeferredInitFinder())


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
    # ``python -m config.celery_cli``: in a Celery process ``config/__init__.py`` loaded this
    # module already (as ``config.celery_cli``) and installed its import hooks; run that copy,
    # so its classes are the ones the hooks use.
    sys.modules.get("config.celery_cli", sys.modules[__name__]).main()
