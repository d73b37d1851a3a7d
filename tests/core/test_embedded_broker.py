"""The embedded broker's file does not grow with every message ever sent."""

from __future__ import annotations

import io
import sqlite3

import pytest
from kombu import Connection, Exchange, Queue

from apps.core.embedded_broker import (
    embedded_broker_compact,
    embedded_broker_file,
    embedded_broker_prepare,
)


def _rows(path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        visible = db.execute("SELECT COUNT(*) FROM kombu_message WHERE visible = 1").fetchone()[0]
        hidden = db.execute("SELECT COUNT(*) FROM kombu_message WHERE visible = 0").fetchone()[0]
    return visible, hidden


def test_delivered_messages_are_removed_and_the_rest_still_flow(tmp_path):
    path = tmp_path / "broker.sqlite3"
    queue = Queue("work", Exchange("work"), routing_key="work")
    with Connection(f"sqla+sqlite:///{path}") as connection:
        producer = connection.Producer()
        for number in range(10):
            producer.publish(
                {"n": number}, exchange=queue.exchange, routing_key="work", declare=[queue]
            )
        simple = connection.SimpleQueue(queue)
        got = []
        for _ in range(6):
            message = simple.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        assert _rows(path) == (4, 6)

        assert embedded_broker_compact(path) == 6
        assert _rows(path) == (4, 0)

        # An unacknowledged message is in the consumer's hands, not in a row: compaction
        # cannot lose it, and what was still queued arrives in order.
        held = simple.get(timeout=5)
        assert embedded_broker_compact(path) == 1
        got.append(held.payload["n"])
        held.ack()
        for _ in range(3):
            message = simple.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        simple.close()
    assert got == list(range(10))


def test_nothing_to_do_without_the_embedded_broker(tmp_path, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert embedded_broker_file() is None
    assert embedded_broker_compact() == 0
    assert embedded_broker_compact(tmp_path / "missing.sqlite3") == 0


@pytest.mark.parametrize("url", ["sqla+sqlite:////var/lib/mjgate/broker.sqlite3"])
def test_the_file_is_found_from_the_broker_url(url, settings):
    settings.CELERY_BROKER_URL = url
    assert str(embedded_broker_file()) == "/var/lib/mjgate/broker.sqlite3"


def test_the_tables_are_made_once_before_the_processes_start(tmp_path, settings):
    """The run command makes kombu's tables first, so the workers and beat it starts together
    find them (instead of racing to create them); doing it again changes nothing."""
    from django.core.management import call_command

    path = tmp_path / "var" / "broker.sqlite3"
    settings.CELERY_BROKER_URL = f"sqla+sqlite:///{path}"
    call_command("embedded_broker_prepare", stdout=(out := io.StringIO()))
    assert "embedded broker ready" in out.getvalue()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"kombu_queue", "kombu_message"} <= tables

    assert embedded_broker_prepare(path) is True  # again: nothing raised, nothing lost
    queue = Queue("work", Exchange("work"), routing_key="work")
    with Connection(f"sqla+sqlite:///{path}") as connection:
        connection.Producer().publish(
            {"n": 1}, exchange=queue.exchange, routing_key="work", declare=[queue]
        )
    assert _rows(path) == (1, 0)

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    call_command("embedded_broker_prepare", stdout=(out := io.StringIO()))
    assert "nothing to prepare" in out.getvalue()
