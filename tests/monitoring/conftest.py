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


class _IncomingWebhook(BaseHTTPRequestHandler):
    """Answers like Slack's incoming webhooks: 200 ``ok`` for a JSON body with ``text``,
    400 ``invalid_payload`` / ``no_text`` otherwise."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def slack() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IncomingWebhook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield (
        f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX",
        server.received,  # type: ignore[attr-defined]
    )
    server.shutdown()
    server.server_close()
