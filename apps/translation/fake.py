"""Local stand-ins for the four translation services, speaking each one's real wire format.

For tests and demos: ``python -m apps.translation.fake --port 8765`` serves all four on one
port (OpenAI ``/v1/chat/completions``, DeepL ``/v2/translate``, Baidu
``/api/trans/vip/translate``, LibreTranslate ``/translate``). Each checks credentials the way
the real service does and answers errors in that service's shape; ``delay``, ``drip``,
``fail_with``, ``rate_limit`` and ``raw_answer`` make it slow, trickling, broken, throttled or
hostile. The "translation" is a small glossary, deterministic so tests can assert exact
English.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

GLOSSARY = {
    "一只猫": "a cat",
    "一只狗": "a dog",
    "猫": "cat",
    "狗": "dog",
    "在草地上": "on the grass",
    "汽车": "cars",
    "人": "people",
    "红色的花": "red flowers",
    "蓝天": "blue sky",
    "城市": "city",
    "夜晚的": "at night",
    "夜晚": "night",
    "赛博朋克": "cyberpunk",
    "风格": "style",
    "一座": "a",
    "山": "mountain",
    "水彩画": "watercolor painting",
    "戴着帽子": "wearing a hat",
    "的": "",
    "和": "and",
    "，": ",",
    "、": ",",
    "chat": "chat",
    "красный": "red",
    "кот": "cat",
}
_BY_LENGTH = sorted(GLOSSARY, key=len, reverse=True)


def fake_english(text: str) -> str:
    """Longest-match glossary replacement; characters it does not know pass through."""
    words: list[str] = []
    position = 0
    buffer = ""
    while position < len(text):
        for source in _BY_LENGTH:
            if text.startswith(source, position):
                if buffer.strip():
                    words.append(buffer.strip())
                buffer = ""
                if GLOSSARY[source]:
                    words.append(GLOSSARY[source])
                position += len(source)
                break
        else:
            char = text[position]
            if char.isspace():
                if buffer.strip():
                    words.append(buffer.strip())
                buffer = ""
            else:
                buffer += char
            position += 1
    if buffer.strip():
        words.append(buffer.strip())
    return " ".join(words).replace(" ,", ",")


class FakeTranslators:
    """The state shared by the handlers: keys, behaviour switches and call counts."""

    def __init__(self) -> None:
        self.openai_key = "sk-test-fake"
        self.deepl_key = "deepl-fake:fx"
        self.baidu_app_id = "20240001"
        self.baidu_secret = "baidu-secret"  # noqa: S105 - the fake's own test key
        self.libre_key = ""  # empty: the server needs no key, like a default LibreTranslate
        self.delay = 0.0
        self.fail_with: int | None = None
        self.rate_limit = False
        #: Seconds between the bytes of an answer's body (0: all at once), like a service
        #: that answers at once and then trickles.
        self.drip = 0.0
        #: Sent as the body of every 200 answer instead of the service's own (a broken or
        #: hostile service: oversized, deeply nested …).
        self.raw_answer: bytes | None = None
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, Any]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        state = self.server.state
        data = json.dumps(body, ensure_ascii=False).encode()
        if status == 200 and state.raw_answer is not None:
            data = state.raw_answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not state.drip:
            self.wfile.write(data)
            return
        for position in range(len(data)):
            self.wfile.write(data[position : position + 1])
            self.wfile.flush()
            time.sleep(state.drip)

    def _body(self) -> tuple[dict[str, Any], bool]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                loaded = json.loads(raw or b"{}")
            except ValueError:
                return {}, False
            return (loaded if isinstance(loaded, dict) else {}), True
        form = parse_qs(raw.decode(errors="replace"), keep_blank_values=True)
        return {key: values[-1] for key, values in form.items()}, True

    def do_POST(self) -> None:
        state = self.server.state
        body, readable = self._body()
        route = self.path.split("?", 1)[0]
        with state.lock:
            state.calls[route] += 1
            state.requests.append((route, body))
        if state.delay:
            time.sleep(state.delay)
        handlers = {
            "/v1/chat/completions": self._openai,
            "/v2/translate": self._deepl,
            "/api/trans/vip/translate": self._baidu,
            "/translate": self._libre,
        }
        handler = handlers.get(route)
        if handler is None:
            self._send(404, {"error": "Not Found"})
            return
        handler(body if readable else None)

    # --- OpenAI chat completions ---------------------------------------------------------
    def _openai(self, body: dict[str, Any] | None) -> None:
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {state.openai_key}":
            self._send(401, _openai_error("Incorrect API key provided.", "invalid_api_key"))
            return
        if state.rate_limit:
            self._send(
                429,
                _openai_error("Rate limit reached for requests", "rate_limit_exceeded"),
                {"Retry-After": "1"},
            )
            return
        if state.fail_with:
            self._send(state.fail_with, _openai_error("The server had an error.", "server_error"))
            return
        messages = (body or {}).get("messages")
        if not isinstance(messages, list) or not messages or not body or not body.get("model"):
            self._send(400, _openai_error("'messages' and 'model' are required.", None))
            return
        text = str(messages[-1].get("content", ""))
        self._send(
            200,
            {
                "id": "chatcmpl-" + hashlib.sha256(text.encode()).hexdigest()[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": fake_english(text)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": len(text), "completion_tokens": 8, "total_tokens": 9},
            },
        )

    # --- DeepL --------------------------------------------------------------------------
    def _deepl(self, body: dict[str, Any] | None) -> None:
        state = self.server.state
        if self.headers.get("Authorization") != f"DeepL-Auth-Key {state.deepl_key}":
            self._send(403, {"message": "Authorization failure, check auth_key"})
            return
        if state.rate_limit:
            self._send(429, {"message": "Too many requests"})
            return
        if state.fail_with:
            self._send(state.fail_with, {"message": "Quota Exceeded"})
            return
        texts = (body or {}).get("text")
        if isinstance(texts, str):
            texts = [texts]
        if not texts or not (body or {}).get("target_lang"):
            self._send(400, {"message": "Value for 'target_lang' not supported."})
            return
        self._send(
            200,
            {
                "translations": [
                    {"detected_source_language": "ZH", "text": fake_english(str(t))} for t in texts
                ]
            },
        )

    # --- Baidu --------------------------------------------------------------------------
    def _baidu(self, body: dict[str, Any] | None) -> None:
        state = self.server.state
        form = body or {}
        query = str(form.get("q", ""))
        if not query or not form.get("appid") or not form.get("salt") or not form.get("sign"):
            self._send(200, {"error_code": "54000", "error_msg": "PARAM_FROM_TO_OR_Q_EMPTY"})
            return
        if form["appid"] != state.baidu_app_id:
            self._send(200, {"error_code": "52003", "error_msg": "UNAUTHORIZED USER"})
            return
        expected = hashlib.md5(
            f"{form['appid']}{query}{form['salt']}{state.baidu_secret}".encode(),
            usedforsecurity=False,
        ).hexdigest()
        if form["sign"] != expected:
            self._send(200, {"error_code": "54001", "error_msg": "Invalid Sign"})
            return
        if state.rate_limit:
            self._send(200, {"error_code": "54003", "error_msg": "Invalid Access Limit"})
            return
        if state.fail_with:
            self._send(200, {"error_code": "52001", "error_msg": "TIMEOUT"})
            return
        lines = query.split("\n")
        self._send(
            200,
            {
                "from": "zh",
                "to": form.get("to", "en"),
                "trans_result": [{"src": line, "dst": fake_english(line)} for line in lines],
            },
        )

    # --- LibreTranslate -----------------------------------------------------------------
    def _libre(self, body: dict[str, Any] | None) -> None:
        state = self.server.state
        if body is None:
            self._send(400, {"error": "Invalid request: the body is not valid JSON"})
            return
        if state.libre_key and body.get("api_key") != state.libre_key:
            self._send(403, {"error": "Invalid API key"})
            return
        if state.rate_limit:
            self._send(429, {"error": "Too many request limits violation"})
            return
        if state.fail_with:
            self._send(state.fail_with, {"error": "Cannot translate text"})
            return
        query = body.get("q")
        if not query:
            self._send(400, {"error": "Invalid request: missing q parameter"})
            return
        if not body.get("target"):
            self._send(400, {"error": "Invalid request: missing target parameter"})
            return
        detected = {"confidence": 90.0, "language": "zh"}
        if isinstance(query, list):
            self._send(
                200,
                {
                    "translatedText": [fake_english(str(q)) for q in query],
                    "detectedLanguage": [detected for _ in query],
                },
            )
            return
        self._send(200, {"translatedText": fake_english(str(query)), "detectedLanguage": detected})


def _openai_error(message: str, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: FakeTranslators) -> None:
        super().__init__(address, _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its deadline passed) closes the socket mid-answer, as
        # callers of the real services do; that is not an error of the fake's.
        return


@contextmanager
def running(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, FakeTranslators]]:
    """Serve the fakes in a thread; yields the base URL and the state to steer them."""
    state = FakeTranslators()
    server = _Server((host, port), state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    options = parser.parse_args()
    state = FakeTranslators()
    server = _Server((options.host, options.port), state)
    sys.stdout.write(
        f"fake translators on http://{options.host}:{options.port} — OpenAI key "
        f"{state.openai_key}, DeepL key {state.deepl_key}, Baidu app id {state.baidu_app_id} "
        f"secret {state.baidu_secret}, LibreTranslate without a key\n"
    )
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
