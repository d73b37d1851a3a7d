from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from apps.accounts.models import Organization
from apps.core.http import SafeSession
from apps.tasks.models import Task
from apps.webhooks import clock as webhook_clock
from apps.webhooks import delivery as delivery_module
from tests.factories import TaskFactory


class Receiver:
    """A webhook receiver on loopback. Records every request; answers ``respond()``'s status."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        receiver = self
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.respond: Callable[[dict[str, Any]], int] = lambda request: 200
        self.location: str | None = None
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.1 keeps the connection open between requests; 1.0 closes it after each.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length).decode() if length else "",
                }
                status = receiver.respond(request)
                request["answered"] = status
                with receiver.lock:
                    receiver.requests.append(request)
                payload = b'{"received":true}' if status < 300 else b"nope"
                self.send_response(status)
                if receiver.location and 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            # Deliveries arrive several at once: the default backlog of 5 resets connections.
            request_queue_size = 128

            def verify_request(self, request: Any, client_address: Any) -> bool:
                receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, request: dict[str, Any]) -> Any:
    """Verify like a customer would, with the standardwebhooks library."""
    return Webhook(secret).verify(request["body"], request["headers"])


def body(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def keep_alive_receiver() -> Iterator[Receiver]:
    server = Receiver(keep_alive=True)
    yield server
    server.close()


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[SafeSession]:
    """The delivery code's connection pool and sending threads, new for this test (the
    threads are made again with the test's settings)."""
    session = SafeSession()
    monkeypatch.setattr(delivery_module, "_session", session)
    monkeypatch.setattr(delivery_module, "_pool", None)
    yield session
    session.close()


@pytest.fixture
def allow_private(settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture
def refuse_private(settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(T0)
    monkeypatch.setattr(webhook_clock, "now", fake)
    return fake


@pytest.fixture
def celery_eager() -> Iterator[None]:
    """Run Celery tasks in-process (the real task code, without a broker)."""
    from config.celery import app

    previous = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture
def make_task(organization: Organization) -> Callable[..., Task]:
    def make(org: Organization | None = None, **fields: Any) -> Task:
        return TaskFactory(organization=org or organization, **fields)

    return make


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    """Stands in for Redis and the workers, on the controlled clock.

    ``deliver.apply_async`` calls (what ``apps.core.messaging`` makes) are recorded with their ETA; ``run()`` executes the
    ones whose ETA has come (what a worker would do), ``beat()`` runs the beat task first.
    On-commit callbacks are executed, since that is where the real code queues its work.
    """

    def __init__(self, clock: Clock, capture: Any) -> None:
        self.clock = clock
        self.capture = capture
        self.queue: list[tuple[datetime, list[int]]] = []

    def apply_async(self, args: list[Any], countdown: float | None = None, **kwargs: Any) -> None:
        self.queue.append((self.clock.now + timedelta(seconds=countdown or 0), list(args[0])))

    def committed(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.capture(execute=True):
            return function(*args, **kwargs)

    def run(self) -> int:
        from apps.webhooks.workers import deliver

        ran = 0
        while True:
            due = [message for message in self.queue if message[0] <= self.clock.now]
            if not due:
                return ran
            for message in due:
                self.queue.remove(message)
                self.committed(deliver.run, message[1])
                ran += 1

    def beat(self) -> int:
        from apps.webhooks.workers import deliver_due

        self.committed(deliver_due.run)
        return self.run()


@pytest.fixture
def broker(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> Broker:
    from apps.webhooks.workers import deliver

    fake = Broker(clock, django_capture_on_commit_callbacks)
    monkeypatch.setattr(deliver, "apply_async", fake.apply_async)
    return fake


from tests.integration_support import celery_worker_factory  # noqa: E402, F401
