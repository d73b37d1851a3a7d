"""Operator alerts: told once when a condition starts, once when it clears."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import IntegrityError
from django.utils import timezone

from apps.billing.models import Balance
from apps.core.errors import ValidationFailed
from apps.engines.models import Health, UpstreamAccount
from apps.engines.services import upstream_account_set_health
from apps.monitoring.models import Alert
from apps.monitoring.selectors import alert_settings
from apps.monitoring.services import alert_settings_set_slack_url, alerts_evaluate
from apps.tasks.enums import Mode
from tests.factories import TaskFactory, UpstreamAccountFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(
        email="ops@example.com", password="x" * 12, is_staff=True
    )


@pytest.fixture
def quiet(db):
    """Nothing wrong to start with: the ledger audited, every account healthy."""
    settings = alert_settings()
    settings.ledger_checked_at = timezone.now()
    settings.save()
    UpstreamAccount.objects.filter(is_sandbox_pool=False).delete()
    return settings


def test_account_unhealthy_alerts_once_and_resolves_once(
    quiet, staff, slack, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the fake Slack is on loopback
    url, received = slack
    alert_settings_set_slack_url(settings=quiet, url=url)
    account = UpstreamAccountFactory(modes=[Mode.FAST])
    UpstreamAccountFactory(modes=[Mode.FAST])
    assert alerts_evaluate() == {"opened": 0, "resolved": 0, "open": 0}

    with django_capture_on_commit_callbacks(execute=True):
        upstream_account_set_health(
            account=account,
            health=Health.NEEDS_VERIFICATION,
            reason="Midjourney asks for a CAPTCHA.",
        )
    # The health change itself mails the operators at once (apps/engines/notify.py) …
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com"]
    assert "Midjourney asks for a CAPTCHA." in mail.outbox[0].body
    # … and the alert adds the webhook message without mailing the same news twice.
    assert alerts_evaluate()["opened"] == 1
    assert len(mail.outbox) == 1
    assert len(received) == 1
    assert received[0]["text"] == (
        f"*ALERT*: Upstream account {account.name} is needs verification\n"
        "Midjourney asks for a CAPTCHA."
    )

    for _ in range(3):  # still true: nothing more is sent
        assert alerts_evaluate()["opened"] == 0
    assert len(mail.outbox) == 1 and len(received) == 1

    UpstreamAccount.objects.filter(pk=account.pk).update(health=Health.HEALTHY)
    assert alerts_evaluate() == {"opened": 0, "resolved": 1, "open": 0}
    assert len(mail.outbox) == 2 and mail.outbox[1].subject.startswith("[mjgate] RESOLVED:")
    assert len(received) == 2 and received[1]["text"].startswith("*RESOLVED*")
    alert = Alert.objects.get()
    assert alert.resolved_at is not None
    assert alert.notified["opened"] == {"email": "sent by the event", "slack": 200}
    assert alert.notified["resolved"] == {"email": 1, "slack": 200}


def test_a_cooldown_is_not_an_account_alert(quiet, staff):
    UpstreamAccountFactory(modes=[Mode.FAST])
    UpstreamAccountFactory(modes=[Mode.FAST], unhealthy=True)
    alerts_evaluate()
    assert not Alert.objects.exists()


def test_an_account_its_engine_took_out_still_alerts(quiet, staff):
    UpstreamAccountFactory(modes=[Mode.FAST])
    UpstreamAccountFactory(modes=[Mode.FAST], banned=True, is_enabled=False)
    alerts_evaluate()
    assert list(Alert.objects.values_list("kind", flat=True)) == ["account_unhealthy"]


def test_a_mode_with_no_healthy_account(quiet, staff):
    UpstreamAccountFactory(modes=[Mode.RELAX], banned=True)
    alerts_evaluate()
    kinds = set(Alert.objects.values_list("kind", flat=True))
    assert kinds == {"account_unhealthy", "mode_down"}
    assert Alert.objects.get(kind="mode_down").title == "RELAX has no healthy upstream account"


def test_queue_wait_above_the_threshold(quiet, staff):
    UpstreamAccountFactory(modes=[Mode.FAST, Mode.RELAX, Mode.TURBO])
    now = timezone.now()
    TaskFactory(mode=Mode.TURBO, queued=True, submitted_at=now - timedelta(minutes=9))
    alerts_evaluate(now=now)
    assert not Alert.objects.exists()
    quiet.queue_wait_minutes = 5
    quiet.save()
    alerts_evaluate(now=now)
    assert list(Alert.objects.values_list("key", flat=True)) == ["queue_wait:TURBO"]


def test_success_rate_below_the_threshold(quiet, staff):
    UpstreamAccountFactory(modes=[Mode.FAST, Mode.RELAX, Mode.TURBO])
    TaskFactory.create_batch(15, mode=Mode.FAST, succeeded=True)
    TaskFactory.create_batch(4, mode=Mode.FAST, failed=True)
    alerts_evaluate()
    assert not Alert.objects.exists()  # 19 finished: below the 20 needed to judge
    TaskFactory.create_batch(2, mode=Mode.FAST, failed=True)  # 15 of 21 = 71 % < 80 %
    alerts_evaluate()
    alert = Alert.objects.get()
    assert alert.key == "success_rate:FAST"
    assert alert.detail == "15 of 21 tasks succeeded in the last 15 min."


def test_webhook_endpoints_disabled_en_masse(quiet, staff):
    WebhookEndpointFactory.create_batch(4, disabled=True, disabled_at=timezone.now())
    alerts_evaluate()
    assert not Alert.objects.exists()
    WebhookEndpointFactory(disabled=True, disabled_at=timezone.now())
    alerts_evaluate()
    assert Alert.objects.get().kind == "webhooks_disabled"


def test_ledger_drift_is_found_by_the_periodic_audit(quiet, staff, organization, fund):
    fund(organization, 1000)
    quiet.ledger_checked_at = timezone.now() - timedelta(hours=2)
    quiet.save()
    alerts_evaluate()
    assert not Alert.objects.exists()
    Balance.objects.filter(organization=organization).update(available=999_999)
    alerts_evaluate()  # checked a moment ago: not audited again yet
    assert not Alert.objects.exists()
    quiet.refresh_from_db()
    quiet.ledger_checked_at = timezone.now() - timedelta(hours=2)
    quiet.save()
    alerts_evaluate()
    alert = Alert.objects.get()
    assert alert.kind == "ledger_drift"
    assert "drift" in mail.outbox[-1].subject


def test_one_open_alert_per_key_even_when_evaluators_race(quiet):
    Alert.objects.create(
        key="account:1", kind="account_unhealthy", title="x", opened_at=timezone.now()
    )
    with pytest.raises(IntegrityError):
        Alert.objects.create(
            key="account:1", kind="account_unhealthy", title="x", opened_at=timezone.now()
        )


def test_the_slack_url_is_guarded_and_encrypted(quiet, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    for refused in (
        "http://169.254.169.254/latest",
        "http://100.100.100.200/x",
        "ftp://x.example/",
    ):
        with pytest.raises(ValidationFailed):
            alert_settings_set_slack_url(settings=quiet, url=refused)
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(ValidationFailed):
        alert_settings_set_slack_url(settings=quiet, url="http://127.0.0.1:9/hook")
    alert_settings_set_slack_url(settings=quiet, url="https://93.184.216.34/services/T/B/X")
    quiet.refresh_from_db()
    assert "services" not in quiet.slack_webhook_url_encrypted


def test_a_failing_slack_never_stops_the_e_mail(quiet, staff, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    alert_settings_set_slack_url(settings=quiet, url="http://127.0.0.1:9/hook")
    UpstreamAccountFactory(modes=[Mode.FAST], banned=True)
    alerts_evaluate()
    # The mode's alert is mailed (the account's opening was the event's to mail).
    assert len(mail.outbox) == 1
    alert = Alert.objects.get(kind="mode_down")
    assert alert.notified["opened"]["email"] == 1
    assert "slack_error" in alert.notified["opened"]
