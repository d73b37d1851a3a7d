"""A Celery pool process keeps its database connection from one task to the next, as a web
worker keeps its own between requests; a connection that broke is replaced before a task
uses it (config/celery.py, issue 15)."""

from __future__ import annotations

import select
from collections.abc import Iterator
from types import SimpleNamespace

import psycopg
import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from apps.tasks.models import Task
from config.celery import _drop_broken_connections, app

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL connection"),
]

A_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


@pytest.fixture
def fixup() -> DjangoWorkerFixup:
    """Celery's Django fixup as a worker installs it (its signal handlers called directly)."""
    return DjangoWorkerFixup(app)


@pytest.fixture
def kept() -> Iterator[None]:
    """A connection kept as ``CONN_MAX_AGE`` > 0 keeps it (the test settings use 0)."""
    connection.ensure_connection()
    connection.close_at = None
    yield
    connection.close()


def run_task(fixup: DjangoWorkerFixup) -> int:
    """What a pool process does around a task: the prerun handlers, one statement, postrun."""
    fixup.on_task_prerun(sender=A_TASK)
    _drop_broken_connections()
    count = Task.objects.count()
    fixup.on_task_postrun(sender=A_TASK)
    return count


def terminate_from_outside(raw: psycopg.Connection) -> None:
    """What a PostgreSQL restart does to a kept connection: its server process is gone (and
    has said so on the socket by the time a next task comes)."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
    assert select.select([raw.fileno()], [], [], 5)[0]


def test_a_pool_process_keeps_its_connection_from_one_task_to_the_next(fixup, kept):
    raw = connection.connection
    run_task(fixup)
    run_task(fixup)
    assert connection.connection is raw


def test_a_connection_left_in_a_transaction_is_not_kept(fixup, kept):
    raw = connection.connection
    fixup.on_task_prerun(sender=A_TASK)
    connection.set_autocommit(False)  # a task that died inside a transaction
    fixup.on_task_postrun(sender=A_TASK)
    assert connection.connection is None
    run_task(fixup)
    assert connection.connection is not raw


def test_a_kept_connection_that_broke_costs_no_task(fixup, kept):
    raw = connection.connection
    run_task(fixup)
    terminate_from_outside(raw)
    assert run_task(fixup) == 0  # dropped before the task's first statement, and replaced
    assert connection.connection is not raw


def test_a_healthy_kept_connection_costs_no_statement(fixup, kept):
    """No health-check round trip: the task's own statement is the only one."""
    from django.test.utils import CaptureQueriesContext

    run_task(fixup)
    with CaptureQueriesContext(connection) as queries:
        run_task(fixup)
    assert len(queries) == 1
