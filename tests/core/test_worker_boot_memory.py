"""What a Celery worker does not load at boot (issue 15, P6).

A prefork worker's pool processes are forks of its parent: whatever the parent imported at
boot is resident in each of them. These tests boot the worker's app in a fresh process the way
``python -m config.celery_cli -A config worker`` does (after its restart: ``python -OO`` with
``MJGATE_CELERY_PROCESS=1``), up to the fork, and check that the modules taken out of a
worker's boot stay out, so the saving cannot silently come back.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from django.db import connection

from apps.engines.models import UpstreamAccount
from config import celery_cli
from config.celery_cli import CELERY_PROCESS_ENV, _repl_refused

ROOT = Path(__file__).resolve().parents[2]

#: Modules no worker uses at boot, and what loading them cost in each worker process.
NOT_AT_BOOT = {
    # DRF (the API's parsers, serializers and, through its compat module, requests): ~4 MiB.
    "rest_framework.serializers": "DRF",
    "rest_framework.parsers": "DRF",
    "requests": "DRF's compat module",
    # cryptography's Rust extension: ~10 MiB mapped, loaded where a secret is encrypted or read.
    "cryptography.fernet": "encrypted columns",
    "cryptography.hazmat.bindings._rust": "encrypted columns",
    # celery's command line: the amqp shell (~6 MiB) and coloured output (~1.5 MiB).
    "click_repl._completer": "celery amqp repl",
    "prompt_toolkit": "celery amqp repl",
    "wcwidth": "celery amqp repl",
    "pygments": "coloured CLI output",
    # billiard's cffi route to prctl in every pool process: pycparser's tables, ~3 MiB each.
    "pycparser": "billiard's pdeathsig through cffi",
    "cffi.cparser": "billiard's pdeathsig through cffi",
    # The apps' admin modules (~1.5 MiB): forms, allauth's admins, admin-only services.
    "django.contrib.auth.admin": "admin modules",
    "allauth.account.admin": "admin modules",
    "apps.tasks.admin": "admin modules",
    "apps.operator.admin": "admin modules",
    "apps.translation.services": "admin-only services",
    # django.contrib.admin's __init__ (~0.7 MiB): deferred to the first name read from it.
    "django.contrib.admin.options": "the admin's classes",
    "django.contrib.admin.sites": "the admin's classes",
    "django.contrib.admin.widgets": "the admin's classes",
    # httpx and httpcore (~3.5 MiB with h11, anyio, idna, cookiejar): on the first call out.
    "httpx": "outbound HTTP",
    "httpcore": "outbound HTTP",
    "h11": "outbound HTTP",
    "anyio": "outbound HTTP",
    "apps.core.http_wire": "outbound HTTP",
    # greenlet (and the C++ runtime) for the eventlet and gevent pools.
    "greenlet": "eventlet and gevent pools",
    # redis-py's asyncio client (~1.3 MiB): its package's __init__ runs on first use.
    "redis.asyncio.client": "redis-py's asyncio client",
    "redis.asyncio.cluster": "redis-py's asyncio client",
    "redis.asyncio.connection": "redis-py's asyncio client",
    # Deferred the same way: sqlparse (~0.5 MiB) and Django's generic views.
    "sqlparse.lexer": "SQL scripts (migrations)",
    "sqlparse.cli": "SQL scripts (migrations)",
    "django.views.generic": "class-based views",
}

#: Loaded by that same boot: without them the test would prove nothing.
AT_BOOT = (
    "celery.bin.amqp",
    "celery.apps.worker",
    "apps.tasks.workers",
    "apps.webhooks.workers",
    "django.contrib.admin.models",
)

BOOT = """
import json, sys
from config.celery_cli import leave_out_extras   # config/__init__.py ran it already
leave_out_extras()
import celery.bin.celery                          # the command line, every subcommand
from celery.apps.worker import Worker             # the worker command's module
import celery.concurrency.prefork
from config.celery import app
app.loader.import_default_modules()               # django.setup() and every task module
import celery.platforms, ctypes
celery.platforms.set_pdeathsig("SIGKILL")         # what each pool process does first
libc = ctypes.CDLL(None)
signum = ctypes.c_int()
libc.prctl(2, ctypes.byref(signum))               # PR_GET_PDEATHSIG
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
import redis.asyncio                              # deferred: still only the package
asyncio_client_loaded_by_import = "redis.asyncio.client" in sys.modules
from redis.asyncio import Redis as AsyncRedis     # the first name read runs its __init__
import sqlparse
split = sqlparse.split("SELECT 1; SELECT 2;")
from django.contrib import admin
from django.urls import reverse
print(json.dumps({
    "modules": loaded,
    "pdeathsig": signum.value,
    "optimize": sys.flags.optimize,
    "docstring": json.dumps.__doc__,
    "admin_registered_at_boot": len(admin.site._registry),
    # The URLconf imports the admin modules itself: an admin URL still resolves.
    "admin_url": reverse("admin:tasks_task_changelist"),
    "admin_registered_after_urls": len(admin.site._registry),
    "asyncio_client_loaded_by_import": asyncio_client_loaded_by_import,
    "async_redis": f"{AsyncRedis.__module__}.{AsyncRedis.__qualname__}",
    "async_redis_names": sorted(set(redis.asyncio.__all__) - set(dir(redis.asyncio))),
    "sqlparse_split": split,
}))
"""


@pytest.fixture(scope="module")
def booted() -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-OO", "-c", BOOT],
        cwd=ROOT,
        env={**os.environ, CELERY_PROCESS_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return loaded


def test_a_booted_worker_has_not_imported_what_it_does_not_use(booted):
    modules = set(booted["modules"])
    assert [name for name in AT_BOOT if name not in modules] == []
    loaded = {name: why for name, why in NOT_AT_BOOT.items() if name in modules}
    assert loaded == {}


def test_a_booted_worker_has_no_docstrings(booted):
    """-OO drops docstrings (about 4 MiB of every worker process)."""
    assert booted["optimize"] == 2
    assert booted["docstring"] is None


def test_deferred_packages_run_their_init_on_first_use(booted):
    """redis-py's asyncio package is imported (redis-py imports its submodules) but its
    ``__init__``, which imports the whole asyncio client, runs only when a name is read."""
    assert booted["asyncio_client_loaded_by_import"] is False
    assert booted["async_redis"] == "redis.asyncio.client.Redis"
    # Every name the package exports is there once it has run.
    assert booted["async_redis_names"] == []
    # The same for sqlparse, which Django's operations use for SQL scripts.
    assert booted["sqlparse_split"] == ["SELECT 1;", "SELECT 2;"]


def test_a_deferred_init_runs_once_when_threads_read_it_together(tmp_path, monkeypatch):
    """The first reads from a deferred package, from several threads at once, run its
    ``__init__`` once; each gets the name, and an unknown name still raises AttributeError."""
    package = tmp_path / "deferred_probe"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import builtins, time\n"
        "builtins.deferred_probe_runs = getattr(builtins, 'deferred_probe_runs', 0) + 1\n"
        "time.sleep(0.2)\n"
        "VALUE = 42\n"
    )
    (package / "sub" / "__init__.py").write_text("SUB = 'sub'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(celery_cli, "DEFERRED", ("deferred_probe",))
    finder = celery_cli._DeferredInitFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    import builtins

    try:
        module = importlib.import_module("deferred_probe")
        # Its submodules import as usual; the package's own __init__ has not run.
        assert importlib.import_module("deferred_probe.sub").SUB == "sub"
        assert getattr(builtins, "deferred_probe_runs", 0) == 0
        with ThreadPoolExecutor(max_workers=6) as pool:
            values = list(pool.map(lambda _: module.VALUE, range(6)))
        assert values == [42] * 6
        assert builtins.deferred_probe_runs == 1
        with pytest.raises(AttributeError):
            _ = module.MISSING
    finally:
        for name in ("deferred_probe", "deferred_probe.sub"):
            sys.modules.pop(name, None)
        if hasattr(builtins, "deferred_probe_runs"):
            del builtins.deferred_probe_runs


def test_a_worker_loads_the_admin_only_with_the_urlconf(booted):
    assert booted["admin_registered_at_boot"] == 0
    assert booted["admin_url"] == "/admin/tasks/task/"
    assert booted["admin_registered_after_urls"] > 20


def test_celery_cli_restarts_itself_as_a_celery_process():
    """``python -m config.celery_cli`` replaces itself once with ``python -OO`` and
    ``MJGATE_CELERY_PROCESS=1``, keeping its arguments; then it runs as asked."""
    code = (
        "import os, sys\n"
        "from config.celery_cli import restart_as_celery_process\n"
        "print('started', os.getpid(), flush=True)\n"
        "restart_as_celery_process()\n"
        "print(os.getpid(), sys.flags.optimize, os.environ['MJGATE_CELERY_PROCESS'], sys.argv[1:])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != CELERY_PROCESS_ENV}
    completed = subprocess.run(
        [sys.executable, "-c", code, "worker", "-Q", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    started, restarted, final = completed.stdout.strip().splitlines()
    pid = started.split()[1]
    # Started twice (the second time under -OO), one pid: the process was replaced.
    assert started == restarted == f"started {pid}"
    assert final == f"{pid} 2 1 ['worker', '-Q', 'x']"


def test_celery_cli_starts_without_runpy_warning():
    """``python -m config.celery_cli`` in a Celery process: ``config/__init__.py`` loads the
    module before runpy runs it as ``__main__``; that copy runs, with no warning printed."""
    env = {**os.environ, CELERY_PROCESS_ENV: "1"}
    completed = subprocess.run(
        [sys.executable, "-OO", "-m", "config.celery_cli", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Usage:" in completed.stdout
    assert "RuntimeWarning" not in completed.stderr, completed.stderr


def test_outbound_http_loads_httpx_on_first_use():
    """apps.core.http imports httpx (to parse) and httpcore (to connect) when first used, not
    with Django's start in a Celery process (the web's admin modules import httpx)."""
    code = (
        "import sys, django\n"
        "django.setup()\n"
        "import apps.core.http as http\n"
        "before = sorted(m for m in ('httpx', 'httpcore', 'apps.core.http_wire') if m in sys.modules)\n"
        "http.check_url('https://example.com/hook', resolve_host=False)\n"
        "print(before, 'httpx' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, CELERY_PROCESS_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout.strip().splitlines()[-1] == "[] True"


def test_each_pool_process_still_dies_with_its_parent(booted):
    """The parent-death signal is set (through ctypes), as celery asks of each pool process."""
    assert booted["pdeathsig"] == signal.SIGKILL


def test_the_amqp_shell_is_refused_with_where_to_find_it():
    group = click.Group("amqp")
    _repl_refused().register_repl(group)
    result = CliRunner().invoke(group, ["repl"])
    assert result.exit_code == 2
    assert "run `celery -A config amqp repl`" in result.output


def _raw_secrets(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM engines_upstreamaccount WHERE id = %s", [pk])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_no_secrets_are_stored_as_no_token_and_read_back_empty():
    """An account without secrets needs no decryption (nor cryptography) to be read."""
    bare = UpstreamAccount.objects.create(name="bare", engine="sandbox", modes=["FAST"])
    keyed = UpstreamAccount.objects.create(
        name="keyed", engine="sandbox", modes=["FAST"], secrets={"token": "s3cret"}
    )
    assert _raw_secrets(bare.pk) == ""
    assert UpstreamAccount.objects.get(pk=bare.pk).secrets == {}
    assert "s3cret" not in _raw_secrets(keyed.pk)
    assert _raw_secrets(keyed.pk) != ""
    assert UpstreamAccount.objects.get(pk=keyed.pk).secrets == {"token": "s3cret"}
