"""Keep the embedded broker's SQLite file small (the run command's broker, no server).

kombu's SQLAlchemy transport marks a delivered message invisible and never deletes it, so the
file, and the index its consumers search on every poll, grows with every message ever sent
(each running task sends a poll message every couple of seconds). kombu never reads an
invisible row again: an unacknowledged message a dead worker held is restored from the
worker's own memory by re-publishing, not from that row. So deleting invisible rows changes
nothing a consumer can see, and beat does it every few minutes, then truncates the
write-ahead log.

kombu creates the file's tables when a process first opens it; two processes doing so at
once (the run command starts several workers and beat together) race, and one of them logs
"table kombu_queue already exists" before it reconnects. The run command makes them first
(``embedded_broker_prepare``, the ``embedded_broker_prepare`` management command).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from django.conf import settings
from kombu import Connection

logger = logging.getLogger(__name__)

#: kombu's default table name (we set no ``message_tablename``).
MESSAGE_TABLE = "kombu_message"


def embedded_broker_file() -> Path | None:
    """The SQLite file when the broker is the embedded one, else None."""
    url = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    prefix = "sqla+sqlite:///"
    if not url.startswith(prefix):
        return None
    return Path(url[len(prefix) :])


def embedded_broker_prepare(path: Path | None = None) -> bool:
    """Create the broker file and kombu's tables in it, once, before the processes that use
    it start (each would otherwise create them itself, racing the others). True when the
    embedded broker is in use (the tables exist now); a no-op otherwise."""
    path = path or embedded_broker_file()
    if path is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # Wait for another process's write lock rather than fail (as the settings' options do).
    options = {"connect_args": {"timeout": 30}}
    with Connection(f"sqla+sqlite:///{path}", transport_options=options) as connection:
        connection.default_channel.session  # opening the session creates the tables  # noqa: B018
    return True


def embedded_broker_compact(path: Path | None = None) -> int:
    """Delete every delivered message from the broker file; returns how many went."""
    path = path or embedded_broker_file()
    if path is None or not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MESSAGE_TABLE,)
        ).fetchone()
        if not exists:
            return 0
        with db:  # one short write transaction; publishers wait on the lock, up to 30 s
            removed = db.execute(f"DELETE FROM {MESSAGE_TABLE} WHERE visible = 0").rowcount  # noqa: S608 - a constant
        with contextlib.suppress(sqlite3.Error):  # a busy checkpoint is retried next time
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if removed:
        logger.info("embedded broker: %d delivered messages removed from %s", removed, path)
    return removed
