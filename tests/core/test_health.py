from __future__ import annotations

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
