"""The public status: per mode state, queue depth and median wait, and nothing about tenants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.engines.models import UpstreamAccount
from apps.monitoring.selectors import modes_status
from apps.tasks.enums import Mode
from tests.factories import OrganizationFactory, TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded():
    """FAST: two healthy accounts; RELAX: only a banned one; TURBO: one healthy, one cooling."""
    UpstreamAccount.objects.filter(is_sandbox_pool=False).delete()
    fast, _ = UpstreamAccountFactory.create_batch(2, modes=[Mode.FAST])
    UpstreamAccountFactory(modes=[Mode.RELAX], banned=True)
    UpstreamAccountFactory(modes=[Mode.TURBO])
    UpstreamAccountFactory(modes=[Mode.TURBO], unhealthy=True)
    now = timezone.now()
    secret_org = OrganizationFactory(name="Secret Tenant Ltd")
    for wait in (10, 20, 60):  # started in the window: median 20 s
        TaskFactory(
            organization=secret_org,
            mode=Mode.FAST,
            running=True,
            upstream_account=fast,
            submitted_at=now - timedelta(minutes=5, seconds=wait),
            started_at=now - timedelta(minutes=5),
        )
    TaskFactory(  # started before the window: not counted
        organization=secret_org,
        mode=Mode.FAST,
        running=True,
        upstream_account=fast,
        submitted_at=now - timedelta(minutes=40),
        started_at=now - timedelta(minutes=30),
    )
    TaskFactory.create_batch(4, organization=secret_org, mode=Mode.RELAX, queued=True)
    TaskFactory(organization=secret_org, mode=Mode.FAST, queued=True, is_test=True)  # a test key's
    return now


def test_each_mode_state_depth_and_median_wait(seeded):
    by_mode = {s.mode: s for s in modes_status(now=seeded)}
    assert by_mode["FAST"].state == "operational"
    assert by_mode["FAST"].median_wait_seconds == 20
    assert by_mode["FAST"].queue_depth == 0
    assert by_mode["RELAX"].state == "down"
    assert by_mode["RELAX"].queue_depth == 4
    assert by_mode["RELAX"].median_wait_seconds is None
    assert by_mode["TURBO"].state == "degraded"
    assert by_mode["TURBO"].reasons == ("1 of 2 upstream accounts unavailable",)


def test_api_is_public_and_says_nothing_about_tenants(seeded):
    response = Client().get("/api/v1/status")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["window_minutes"] == 15
    assert body["modes"] == [
        {"mode": "FAST", "status": "operational", "queue_depth": 0, "median_wait_seconds": 20.0},
        {"mode": "RELAX", "status": "down", "queue_depth": 4, "median_wait_seconds": None},
        {"mode": "TURBO", "status": "degraded", "queue_depth": 0, "median_wait_seconds": None},
    ]
    assert "Secret Tenant" not in response.content.decode()
    assert "upstream-" not in response.content.decode()  # no account names either
    assert response["Cache-Control"] == "public, max-age=10"


def test_a_long_wait_degrades_a_mode(seeded):
    TaskFactory(mode=Mode.FAST, queued=True, submitted_at=seeded - timedelta(minutes=30))
    fast = next(s for s in modes_status(now=seeded) if s.mode == "FAST")
    assert fast.state == "degraded"
    assert fast.reasons == ("the oldest queued task has waited 30 min",)


def test_the_status_page_needs_no_login(seeded):
    response = Client().get("/status/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Service status" in page
    assert 'data-mode="RELAX"' in page and ">Down<" in page
    assert "Secret Tenant" not in page


def test_the_public_answer_is_cached_briefly(seeded):
    first = Client().get("/api/v1/status").json()
    TaskFactory.create_batch(3, mode=Mode.TURBO, queued=True)
    assert Client().get("/api/v1/status").json() == first
