"""What the race tests share: a call run on a thread of its own (with its own database
connection, closed when it ends), and a look at whether a session of this test database waits
for a lock, which is how a test knows the other side reached the lock it is meant to wait on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection


def on_thread(out: dict[str, Any], name: str, call: Callable[[], Any]) -> threading.Thread:
    """Start ``call`` on a daemon thread named ``name``; ``out[name]`` gets what it returns, or
    the exception it raised, for the test to check after ``join``."""

    def body() -> None:
        try:
            out[name] = call()
        except BaseException as exc:  # pragma: no cover - reported by the test
            out[name] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


def a_session_waits_for_a_lock() -> bool:
    """Whether another session of this test database waits for a lock now (other test
    databases share the server, so only this one's sessions count)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


def lock_wait_seen(thread: threading.Thread, timeout: float = 30) -> bool:
    """Whether a session waits for a lock while ``thread`` runs, looked for up to ``timeout``
    seconds (False as soon as the thread ends without one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        if a_session_waits_for_a_lock():
            return True
        time.sleep(0.01)
    return False
