"""Raise and resolve operator alerts, and tell operators by e-mail and Slack-compatible webhook.

``alerts_evaluate`` runs every minute (Celery beat). A condition that becomes true opens one
alert and sends one message; while it stays true nothing more is sent; when it clears the
alert is resolved and a "resolved" message follows. The unique constraint on open alerts makes
two evaluators racing each other open it once.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.billing.audit import ledger_audit
from apps.core.crypto import decrypt_text, encrypt_text
from apps.core.errors import ValidationFailed
from apps.core.http import OutboundHTTPError, Timeout, check_url, safe_request

from . import selectors
from .models import Alert, AlertSettings

logger = logging.getLogger(__name__)

SLACK_TIMEOUT = Timeout(connect=3.0, read=5.0, total=8.0)


def _product() -> str:
    return str(getattr(django_settings, "PRODUCT_NAME", "mjgate"))


def slack_webhook_url(settings: AlertSettings) -> str:
    token = settings.slack_webhook_url_encrypted
    return decrypt_text(token) if token else ""


def alert_settings_set_slack_url(*, settings: AlertSettings, url: str) -> None:
    """Store (encrypted) or clear the Slack-compatible incoming webhook URL.

    Refused unless the SSRF guard accepts it now: a URL that could only ever reach a private
    or metadata address is a mistake to report at once, not a silent delivery failure later.
    """
    url = (url or "").strip()
    if url:
        check_url(url)
    settings.slack_webhook_url_encrypted = encrypt_text(url) if url else ""
    settings.save(update_fields=["slack_webhook_url_encrypted"])


def _staff_emails() -> list[str]:
    return list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .order_by("email")
        .values_list("email", flat=True)
    )


def _notify(
    alert: Alert, *, resolved: bool, settings: AlertSettings, email: bool = True
) -> dict[str, Any]:
    """Tell operators; returns where it went (or why it did not) for the alert's record."""
    word = "RESOLVED" if resolved else "ALERT"
    subject = f"[{_product()}] {word}: {alert.title}"
    when = (alert.resolved_at if resolved else alert.opened_at) or timezone.now()
    body = f"{alert.title}\n\n{alert.detail}\n\n" + (
        f"Resolved at {when:%Y-%m-%d %H:%M:%S %Z} (open since "
        f"{alert.opened_at:%Y-%m-%d %H:%M:%S %Z})."
        if resolved
        else f"Since {when:%Y-%m-%d %H:%M:%S %Z}. You will get one message when it clears."
    )
    told: dict[str, Any] = {}
    if settings.email_staff and email:
        recipients = _staff_emails()
        if recipients:
            try:
                send_mail(subject, body, None, recipients)
                told["email"] = len(recipients)
            except Exception as exc:  # mail is best effort; the alert stays in the admin
                logger.warning("alert e-mail failed: %s", exc)
                told["email_error"] = exc.__class__.__name__
    url = slack_webhook_url(settings)
    if url:
        payload = json.dumps({"text": f"*{word}*: {alert.title}\n{alert.detail}"}).encode()
        try:
            response = safe_request(
                "POST",
                url,
                headers={"Content-Type": "application/json"},
                content=payload,
                timeout=SLACK_TIMEOUT,
            )
            told["slack"] = response.status
        except (ValidationFailed, OutboundHTTPError) as exc:
            logger.warning("alert webhook failed: %s", exc)
            told["slack_error"] = str(exc)[:200]
    return told


def _ledger_check_due(settings: AlertSettings, now: datetime) -> bool:
    last = settings.ledger_checked_at
    return last is None or (now - last).total_seconds() >= settings.ledger_check_minutes * 60


def ledger_check_record(*, settings: AlertSettings, now: datetime) -> None:
    report = ledger_audit(max_drifts=10)
    settings.ledger_checked_at = now
    settings.ledger_drifts = report.drift_count
    settings.save(update_fields=["ledger_checked_at", "ledger_drifts"])


def current_conditions(*, now: datetime, settings: AlertSettings) -> list[selectors.Condition]:
    statuses = selectors.modes_status(now=now, settings=settings)
    return [
        *selectors.unhealthy_accounts(),
        *selectors.mode_conditions(statuses, settings),
        *selectors.webhook_conditions(now=now, settings=settings),
        *selectors.ledger_condition(settings),
    ]


def _open(
    condition: selectors.Condition, *, now: datetime, settings: AlertSettings
) -> Alert | None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                key=condition.key,
                kind=condition.kind,
                title=condition.title[:200],
                detail=condition.detail,
                opened_at=now,
            )
    except IntegrityError:  # already open (another evaluator, or the event itself)
        return None
    told = _notify(alert, resolved=False, settings=settings, email=condition.email_on_open)
    if not condition.email_on_open:
        told["email"] = "sent by the event"
    alert.notified = {"opened": told}
    alert.save(update_fields=["notified"])
    return alert


def alert_open(*, condition: selectors.Condition, now: datetime | None = None) -> Alert | None:
    """Open (and tell) an alert now, from the event that caused it, instead of at the next
    evaluation; ``None`` when one with the same key is open already. The evaluator resolves
    it once the condition no longer holds. Call it after the change is committed."""
    return _open(condition, now=now or timezone.now(), settings=selectors.alert_settings())


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Open alerts for new conditions, resolve those that cleared; tell operators of both."""
    now = now or timezone.now()
    settings = selectors.alert_settings()
    if _ledger_check_due(settings, now):
        ledger_check_record(settings=settings, now=now)
    firing = {c.key: c for c in current_conditions(now=now, settings=settings)}
    report = {"opened": 0, "resolved": 0, "open": 0}
    open_alerts = {a.key: a for a in Alert.objects.filter(resolved_at__isnull=True)}
    for key, condition in firing.items():
        if key in open_alerts:
            continue
        if _open(condition, now=now, settings=settings) is not None:
            report["opened"] += 1
    for key, alert in open_alerts.items():
        if key in firing:
            continue
        resolved = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
            resolved_at=now
        )
        if not resolved:  # resolved by another evaluator
            continue
        alert.resolved_at = now
        alert.notified = {
            **alert.notified,
            "resolved": _notify(alert, resolved=True, settings=settings),
        }
        alert.save(update_fields=["notified"])
        report["resolved"] += 1
    report["open"] = Alert.objects.filter(resolved_at__isnull=True).count()
    return report
