"""The stats page: every figure computed from a known set of tasks and ledger entries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from apps.billing.ledger import ledger_capture, ledger_hold
from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.services import upstream_account_set_enabled
from apps.operator.selectors import (
    AccountLoad,
    DayTokens,
    MinuteBucket,
    ModeQueue,
    SuccessRate,
    TenantTotal,
    stats_overview,
)
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.tasks.scheduling import sandbox_pool_ensure
from tests.factories import OrganizationFactory, TaskFactory
from tests.tasks.helpers import sandbox_account

from .conftest import admin_url

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 10, 12, 30, 30, tzinfo=UTC)


def at(hh: int, mm: int, ss: int = 0, *, days_ago: int = 0) -> datetime:
    return datetime(2026, 1, 10, hh, mm, ss, tzinfo=UTC) - timedelta(days=days_ago)


def task(
    org,
    *,
    mode="FAST",
    status=Status.SUCCESS,
    created,
    submitted=None,
    started=None,
    finished=None,
    account=None,
    is_test=False,
    charge=0,
):
    row = TaskFactory(
        organization=org,
        mode=mode,
        status=status,
        is_test=is_test,
        upstream_account=account,
        submitted_at=submitted or created,
        started_at=started,
        finished_at=finished,
        price=charge,
    )
    Task.objects.filter(pk=row.pk).update(created_at=created)
    if charge:
        ledger_hold(task=row, amount=charge)
        capture = ledger_capture(task=row)
        assert capture is not None
        LedgerEntry.objects.filter(pk=capture.pk).update(created_at=finished)
    return row


@pytest.fixture
def world(organization, fund):
    acme = organization
    other = OrganizationFactory(name="<b>Other</b>")
    fund(acme, 1_000_000)
    fund(other, 1_000_000)
    a = sandbox_account("acct-a", modes="FAST,RELAX", concurrency=4)
    b = sandbox_account("acct-b", modes="FAST,TURBO", concurrency=3)
    upstream_account_set_enabled(account=b, enabled=False)
    pool = sandbox_pool_ensure()
    # Finished in the last hour.
    task(
        acme, created=at(12, 25, 30), started=at(12, 25, 40), finished=at(12, 28, 30), charge=14_000
    )
    task(
        other, created=at(12, 25, 30), started=at(12, 26, 0), finished=at(12, 28, 30), charge=14_000
    )
    task(
        acme,
        mode="RELAX",
        status=Status.FAILURE,
        created=at(12, 25, 30),
        started=at(12, 25, 35),
        finished=at(12, 28, 30),
    )
    task(acme, status=Status.CANCEL, created=at(12, 29, 0), finished=at(12, 29, 30))
    task(
        acme,
        is_test=True,
        created=at(12, 29, 0),
        started=at(12, 29, 1),
        finished=at(12, 29, 40),
        account=pool,
    )
    # Earlier today, and earlier still.
    task(acme, created=at(9, 0), started=at(9, 0, 20), finished=at(9, 30), charge=14_000)
    task(acme, status=Status.FAILURE, created=at(11, 0), started=at(11, 0, 5), finished=at(11, 5))
    task(
        acme,
        mode="RELAX",
        created=at(8, 0, days_ago=5),
        started=at(8, 0, 1, days_ago=5),
        finished=at(8, 10, days_ago=5),
        charge=7_000,
    )
    task(
        other,
        created=at(8, 0, days_ago=40),
        started=at(8, 0, 1, days_ago=40),
        finished=at(8, 10, days_ago=40),
        charge=3_500,
    )
    # Queued, assigned and running now.
    task(acme, status=Status.NOT_START, created=at(12, 29, 30))
    task(other, status=Status.NOT_START, created=at(12, 30, 0))
    task(acme, mode="RELAX", status=Status.NOT_START, created=at(12, 30, 20))
    task(acme, status=Status.SUBMITTED, created=at(12, 30, 0), account=a)
    task(
        other,
        mode="RELAX",
        status=Status.IN_PROGRESS,
        created=at(12, 27, 0),
        started=at(12, 27, 20),
        account=a,
    )
    return acme, other, a, b, pool


def test_the_overview_figures(world):
    acme, other, a, b, pool = world
    stats = stats_overview(now=NOW)

    assert len(stats.per_minute) == 60
    assert stats.per_minute[0].minute == at(11, 31)
    assert stats.per_minute[-1].minute == at(12, 30)
    busy = [
        bucket for bucket in stats.per_minute if bucket.created or bucket.succeeded or bucket.failed
    ]
    assert busy == [
        MinuteBucket(minute=at(12, 25), created=3),
        MinuteBucket(minute=at(12, 27), created=1),
        MinuteBucket(minute=at(12, 28), succeeded=2, failed=1),
        MinuteBucket(minute=at(12, 29), created=2),
        MinuteBucket(minute=at(12, 30), created=3),
    ]
    assert stats.tasks_last_hour == 9

    assert stats.success_hour == SuccessRate(succeeded=2, failed=1)
    assert stats.success_hour.percent == 66.7
    assert stats.success_day == SuccessRate(succeeded=3, failed=2)
    assert stats.success_day.percent == 60.0

    assert stats.modes == [
        ModeQueue(
            mode="FAST",
            queued=2,
            oldest_wait_seconds=60.0,
            avg_wait_seconds=20.0,
            started_last_hour=2,
            running=1,
            capacity=4,
            success=SuccessRate(succeeded=2, failed=0),
        ),
        ModeQueue(
            mode="RELAX",
            queued=1,
            oldest_wait_seconds=10.0,
            avg_wait_seconds=12.5,
            started_last_hour=2,
            running=1,
            capacity=4,
            success=SuccessRate(succeeded=0, failed=1),
        ),
        ModeQueue(
            mode="TURBO",
            queued=0,
            oldest_wait_seconds=None,
            avg_wait_seconds=None,
            started_last_hour=0,
            running=0,
            capacity=0,
            success=SuccessRate(succeeded=0, failed=0),
        ),
    ]
    assert stats.modes[2].success.percent is None

    assert stats.accounts == [
        AccountLoad(
            id=a.pk,
            name="acct-a",
            engine="sandbox",
            modes=["FAST", "RELAX"],
            is_enabled=True,
            is_sandbox_pool=False,
            usable=True,
            health="healthy",
            running=2,
            concurrency=4,
        ),
        AccountLoad(
            id=b.pk,
            name="acct-b",
            engine="sandbox",
            modes=["FAST", "TURBO"],
            is_enabled=False,
            is_sandbox_pool=False,
            usable=False,
            health="healthy",
            running=0,
            concurrency=3,
        ),
        AccountLoad(
            id=pool.pk,
            name="sandbox-pool",
            engine="sandbox",
            modes=["FAST", "RELAX", "TURBO"],
            is_enabled=True,
            is_sandbox_pool=True,
            usable=True,
            health="healthy",
            running=0,
            concurrency=10,
        ),
    ]
    assert stats.accounts[0].utilisation == 50.0

    assert len(stats.tokens_per_day) == 30
    assert stats.tokens_per_day[0].day == date(2025, 12, 12)
    assert [d for d in stats.tokens_per_day if d.tokens] == [
        DayTokens(day=date(2026, 1, 5), tokens=7_000, tasks=1),
        DayTokens(day=date(2026, 1, 10), tokens=42_000, tasks=3),
    ]
    assert stats.tokens_30_days == 49_000
    assert stats.top_tenants == [
        TenantTotal(organization_id=acme.pk, name="Acme", tokens=35_000, tasks=3),
        TenantTotal(organization_id=other.pk, name="<b>Other</b>", tokens=14_000, tasks=1),
    ]
    # Sanity: the 40-day-old capture exists, it is just outside the window.
    assert LedgerEntry.objects.filter(kind=EntryKind.CAPTURE).count() == 5


def test_an_empty_system_has_zeroes_not_errors(db):
    stats = stats_overview(now=NOW)
    assert stats.tasks_last_hour == 0
    assert stats.success_hour.percent is None
    assert [m.queued for m in stats.modes] == [0, 0, 0]
    assert stats.accounts == []
    assert stats.tokens_30_days == 0
    assert stats.top_tenants == []


def test_the_page_draws_local_charts_and_escapes_names(world, operator_client, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    response = operator_client.get(admin_url("operator_stats"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg class="chart"') == 3
    assert 'aria-label="Tasks per minute, last hour"' in html
    assert "<title>12:28: succeeded 2, failed 1</title>" in html
    assert "<title>01-10: tokens 42,000</title>" in html
    assert '<span class="stats-value" id="stat-tasks-hour">9</span>' in html
    assert '<span class="stats-value" id="stat-success-hour">66.7 %</span>' in html
    assert '<span class="stats-value" id="stat-tokens-30">49,000</span>' in html
    assert "&lt;b&gt;Other&lt;/b&gt;" in html and "<b>Other</b>" not in html
    assert "2/4" in html  # acct-a running / concurrency
    # Local assets only: our stylesheet and script, nothing from another host.
    assert "operator/stats.css" in html and "operator/stats.js" in html
    assert "https://" not in html.replace("https://www.djangoproject.com", "")
    assert "cdn" not in html.lower()


def test_the_json_variant_has_the_same_figures(world, operator_client, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    data = operator_client.get(admin_url("operator_stats"), {"format": "json"}).json()
    assert data["tasks_last_hour"] == 9
    assert data["tokens_30_days"] == 49_000
    assert data["success_hour"] == {"succeeded": 2, "failed": 1, "percent": 66.7}
    assert [(m["mode"], m["queued"], m["avg_wait_seconds"]) for m in data["modes"]] == [
        ("FAST", 2, 20.0),
        ("RELAX", 1, 12.5),
        ("TURBO", 0, None),
    ]
    assert [(a["name"], a["running"], a["utilisation"]) for a in data["accounts"]] == [
        ("acct-a", 2, 50.0),
        ("acct-b", 0, 0.0),
        ("sandbox-pool", 0, 0.0),
    ]
    assert [t["name"] for t in data["top_tenants"]] == ["Acme", "<b>Other</b>"]
