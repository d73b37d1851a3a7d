"""Keep the embedded broker's SQLite file small (the run command's broker, no server).

kombu's SQLAlchemy transport marks a delivered message invisible and never deletes it, so the
file, and the index its consumers search on every poll, grows with every message ever sent
(each running task sends a poll message every couple of seconds). kombu never reads an
invisible row again: an unacknowledged message a dead worker held is restored from the
worker's own memory by re-publishing, not from that row. So deleting invisible rows changes
nothing a consumer can see, and beat does it every few minutes, then truncates the
write-ahead log.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from django.conf import settings

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
