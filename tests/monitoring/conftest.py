from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


HOOK_PATH = "/services/T000/B000/XXXX"


class _IncomingWebhook(BaseHTTPRequestHandler):
    """Answers like Slack's incoming webhooks: 200 ``ok`` for a JSON body with ``text``,
    400 ``invalid_payload`` / ``no_text`` otherwise, 404 ``no_service`` for a hook that does not
    exist, and what ``server.refusals[path]`` says for a hook Slack refuses (403
    ``action_prohibited``, 410 ``channel_is_archived`` …): always a plain-text error body."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        refusal = self.server.refusals.get(self.path)
        if refusal is not None:
            status, answer = refusal[0], refusal[1].encode()
        elif self.path != HOOK_PATH:
            status, answer = 404, b"no_service"
        else:
            status, answer = self._answer(raw)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _answer(self, raw: bytes) -> tuple[int, bytes]:
        try:
            body = json.loads(raw)
        except ValueError:
            status, answer = 400, b"invalid_payload"
        else:
            if isinstance(body, dict) and body.get("text"):
                self.server.received.append(body)
                status, answer = 200, b"ok"
            else:
                status, answer = 400, b"no_text"
        return status, answer


@pytest.fixture
def slack_server() -> Iterator[ThreadingHTTPServer]:
    """The fake itself: ``received`` messages, ``refusals`` to set per path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IncomingWebhook)
    server.received = []  # type: ignore[attr-defined]
    server.refusals = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def slack(slack_server: ThreadingHTTPServer) -> tuple[str, list[dict[str, Any]]]:
    return (
        f"http://127.0.0.1:{slack_server.server_address[1]}{HOOK_PATH}",
        slack_server.received,  # type: ignore[attr-defined]
    )
