"""Thresholds are edited in the admin; the webhook URL is write-only and guarded."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.test import Client

from apps.monitoring.selectors import alert_settings
from apps.monitoring.services import slack_webhook_url
from config.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser(email="ops@example.com", password="x" * 12)
    client = Client()
    client.force_login(user)
    return client


def _form(**overrides):
    form = {
        "queue_wait_minutes": "7",
        "success_rate_percent": "90",
        "success_rate_min_tasks": "10",
        "webhooks_disabled_count": "3",
        "ledger_check_minutes": "30",
        "email_staff": "on",
        "new_slack_webhook_url": "",
    }
    form.update(overrides)
    return form


def test_thresholds_and_a_write_only_webhook(staff_client):
    settings = alert_settings()
    url = f"/admin/monitoring/alertsettings/{settings.pk}/change/"
    secret = "https://93.184.216.34/services/T0/B0/secret-part"
    response = staff_client.post(url, _form(new_slack_webhook_url=secret))
    assert response.status_code == 302, response.content.decode()[:3000]
    settings.refresh_from_db()
    assert settings.queue_wait_minutes == 7 and settings.success_rate_percent == 90
    assert slack_webhook_url(settings) == secret
    page = staff_client.get(url).content.decode()
    assert "secret-part" not in page and "set (never shown)" in page
    staff_client.post(url, _form())  # left empty: kept
    settings.refresh_from_db()
    assert slack_webhook_url(settings) == secret
    staff_client.post(url, _form(clear_slack_webhook_url="on"))
    settings.refresh_from_db()
    assert slack_webhook_url(settings) == ""


def test_a_metadata_address_is_refused_in_the_form(staff_client):
    settings = alert_settings()
    response = staff_client.post(
        f"/admin/monitoring/alertsettings/{settings.pk}/change/",
        _form(new_slack_webhook_url="http://169.254.169.254/latest/meta-data"),
    )
    assert response.status_code == 200
    settings.refresh_from_db()
    assert slack_webhook_url(settings) == ""


def test_beat_runs_the_evaluator_every_minute():
    entry = django_settings.CELERY_BEAT_SCHEDULE["monitoring-evaluate-alerts"]
    assert entry["task"] == "monitoring.evaluate_alerts"
    assert entry["schedule"] == 60.0
    app.loader.import_default_modules()
    assert "monitoring.evaluate_alerts" in app.tasks
