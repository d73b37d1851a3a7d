"""The public status and operator alerts judge the shared pool only, and each mode by the
accounts that may take that mode's work now."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.engines.models import Health, UpstreamAccount
from apps.monitoring.models import Alert
from apps.monitoring.selectors import alert_settings, modes_status
from apps.monitoring.services import alerts_evaluate
from apps.tasks.enums import Mode, Pool
from tests.factories import TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def quiet(db):
    """Nothing wrong to start with: the ledger audited, one healthy idle shared account."""
    settings = alert_settings()
    settings.ledger_checked_at = timezone.now()
    settings.save()
    UpstreamAccount.objects.filter(is_sandbox_pool=False).delete()
    UpstreamAccountFactory(modes=[Mode.FAST, Mode.RELAX, Mode.TURBO])
    return settings


def _by_mode(now):
    return {s.mode: s for s in modes_status(now=now)}


def test_an_own_only_backlog_raises_no_queue_alert_and_no_degraded_mode(quiet, organization):
    UpstreamAccountFactory(name="mine", owner=organization, modes=[Mode.FAST], is_enabled=False)
    now = timezone.now()
    TaskFactory(
        organization=organization,
        mode=Mode.FAST,
        queued=True,
        pool=Pool.OWN,
        submitted_at=now - timedelta(minutes=45),
        start_deadline=now + timedelta(hours=1),
    )
    TaskFactory(  # may run on the shared pool: the platform's queue
        organization=organization,
        mode=Mode.FAST,
        queued=True,
        pool=Pool.OWN_THEN_SHARED,
        submitted_at=now - timedelta(minutes=2),
    )
    alerts_evaluate(now=now)
    assert not Alert.objects.exists()
    fast = _by_mode(now)[Mode.FAST]
    assert (fast.state, fast.queue_depth, fast.oldest_wait_seconds) == ("operational", 1, 120.0)


def test_own_only_waits_are_not_in_the_median(quiet, organization):
    mine = UpstreamAccountFactory(name="mine", owner=organization, modes=[Mode.FAST])
    now = timezone.now()
    started = now - timedelta(minutes=2)
    TaskFactory(  # the shared pool's one start: 10 s
        mode=Mode.FAST, running=True, submitted_at=started - timedelta(seconds=10),
        started_at=started,
    )  # fmt: skip
    TaskFactory.create_batch(  # an own account's slow starts: not the platform's wait
        3,
        organization=organization,
        mode=Mode.FAST,
        running=True,
        pool=Pool.OWN,
        upstream_account=mine,
        submitted_at=started - timedelta(minutes=10),
        started_at=started,
    )
    assert _by_mode(now)[Mode.FAST].median_wait_seconds == 10


def test_failures_on_a_tenants_own_account_do_not_lower_the_success_rate(quiet, organization):
    mine = UpstreamAccountFactory(name="mine", owner=organization, modes=[Mode.FAST])
    TaskFactory.create_batch(5, mode=Mode.FAST, succeeded=True)
    TaskFactory.create_batch(  # own-only tasks its own account failed
        15, organization=organization, mode=Mode.FAST, failed=True, pool=Pool.OWN,
        upstream_account=mine,
    )  # fmt: skip
    TaskFactory.create_batch(  # own-then-shared tasks its own account ran and failed
        10, organization=organization, mode=Mode.FAST, failed=True,
        pool=Pool.OWN_THEN_SHARED, upstream_account=mine,
    )  # fmt: skip
    TaskFactory.create_batch(  # own-then-shared tasks the shared pool ran: the platform's
        3, organization=organization, mode=Mode.FAST, failed=True, pool=Pool.OWN_THEN_SHARED
    )
    now = timezone.now()
    alerts_evaluate(now=now)
    assert not Alert.objects.filter(kind="success_rate").exists()
    fast = _by_mode(now)[Mode.FAST]
    assert (fast.state, fast.succeeded, fast.failed) == ("operational", 5, 3)


def test_fast_and_turbo_are_down_when_their_only_account_ran_out_of_fast_hours(quiet):
    UpstreamAccount.objects.filter(is_sandbox_pool=False).update(
        health=Health.FAST_HOURS_EXHAUSTED, health_reason="Out of fast hours."
    )
    now = timezone.now()
    states = _by_mode(now)
    assert states[Mode.RELAX].state == "operational"  # it still takes all RELAX work
    assert states[Mode.RELAX].accounts_usable == 1
    assert (states[Mode.FAST].state, states[Mode.FAST].accounts_usable) == ("down", 0)
    assert (states[Mode.TURBO].state, states[Mode.TURBO].accounts_usable) == ("down", 0)
    alerts_evaluate(now=now)
    keys = set(Alert.objects.filter(kind="mode_down").values_list("key", flat=True))
    assert keys == {"mode_down:FAST", "mode_down:TURBO"}
