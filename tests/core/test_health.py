from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from django.test import Client

from apps.core import views


def test_healthz():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_broker_and_storage():
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


@pytest.mark.django_db
def test_readyz_reports_a_broken_broker(monkeypatch):
    def broken() -> None:
        raise ConnectionRefusedError("no broker")

    monkeypatch.setitem(views.CHECKS, "broker", broken)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "error: ConnectionRefusedError"
    assert response.json()["checks"]["database"] == "ok"


def _blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose SYNs go unanswered, like a broker host that is down or firewalled: the
    listener's backlog is full and nothing accepts, so a new connection attempt just waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    return listener, fillers


def _mute() -> tuple[socket.socket, list[socket.socket]]:
    """A port that accepts connections and never answers (a hung broker)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


@pytest.mark.django_db
@pytest.mark.parametrize("make_broker", [_blackhole, _mute], ids=["unroutable", "hung"])
def test_readyz_answers_503_quickly_when_the_redis_broker_is_dead(make_broker):
    from config.celery import app

    listener, held = make_broker()
    port = listener.getsockname()[1]
    previous = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    try:
        started = time.monotonic()
        response = Client().get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        app.conf.broker_url = previous
        for sock in (listener, *held):
            sock.close()
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "error: OperationalError", "storage": "ok"},
    }
    assert elapsed < 3.0
