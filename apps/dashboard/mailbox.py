"""The local mailbox of a development machine: every mail sent is also kept as a file under
``MAILBOX_DIR`` (development settings only), and the dashboard lists them at ``/dev/mailbox/``
with their links, so a newcomer finds the verification mail without reading worker logs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage as ParsedMessage
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail.backends.console import EmailBackend as ConsoleBackend
from django.core.mail.message import EmailMessage

#: At most this many mails are kept; older ones are deleted as new ones arrive.
KEEP = 200
_LINK_RE = re.compile(r"https?://[^\s<>\"')]+")


def mailbox_dir() -> Path | None:
    folder = getattr(settings, "MAILBOX_DIR", None)
    return Path(folder) if folder else None


class MailboxBackend(ConsoleBackend):
    """Prints each mail like Django's console backend and keeps a copy in ``MAILBOX_DIR``."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = super().send_messages(email_messages)
        folder = mailbox_dir()
        if folder is None or not email_messages:
            return sent
        folder.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
            (folder / name).write_bytes(message.message().as_bytes())
        for old in sorted(folder.glob("*.eml"))[:-KEEP]:
            old.unlink(missing_ok=True)
        return sent


@dataclass(frozen=True)
class Mail:
    id: str
    sent_at: datetime
    to: str
    subject: str
    body: str
    links: list[str]


def _text_of(parsed: ParsedMessage) -> str:
    part = parsed.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content: Any = part.get_content()
    return str(content)


def _read(path: Path) -> Mail:
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, ParsedMessage)
    body = _text_of(parsed)
    stamp = path.name.split("-", 1)[0]
    return Mail(
        id=path.stem,
        sent_at=datetime.strptime(stamp, "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC),
        to=str(parsed.get("To", "")),
        subject=str(parsed.get("Subject", "")),
        body=body,
        links=list(dict.fromkeys(_LINK_RE.findall(body))),
    )


def mail_list(limit: int = 50) -> list[Mail]:
    """The newest mails first."""
    folder = mailbox_dir()
    if folder is None or not folder.is_dir():
        return []
    return [_read(path) for path in sorted(folder.glob("*.eml"), reverse=True)[:limit]]
