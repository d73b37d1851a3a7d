"""Raise and resolve operator alerts, and tell operators by e-mail and Slack-compatible webhook.

``alerts_evaluate`` runs every minute (Celery beat). A condition that has held for
``ALERT_OPEN_AFTER_CHECKS`` checks in a row (and ``ALERT_OPEN_AFTER_SECONDS``) opens one alert
and sends one message; while it stays true nothing more is sent; once it has been clear for
``ALERT_RESOLVE_AFTER_CHECKS`` checks (and ``ALERT_RESOLVE_AFTER_SECONDS``) the alert is
resolved and a "resolved" message follows. A condition that flaps, true one check and clear the
next, so never opens an alert, nor resolves an open one (``ConditionState`` counts the checks).
The unique constraint on open alerts makes two evaluators racing each other open it once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

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
from .models import Alert, AlertSettings, ConditionState

logger = logging.getLogger(__name__)

SLACK_TIMEOUT = Timeout(connect=3.0, read=5.0, total=8.0)
#: Slack says why it refused a message in a word or two (``channel_is_archived``); another
#: receiver may answer with a whole error page. What is kept of it, in characters.
SLACK_ERROR_CHARS = 200
SLACK_MAX_RESPONSE_BYTES = 4096
_REDACTED = "[webhook URL]"


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
        told.update(_slack_post(url, f"*{word}*: {alert.title}\n{alert.detail}"))
    return told


def _without_url(text: str, url: str) -> str:
    """``text`` on one line, cut to ``SLACK_ERROR_CHARS``, without the webhook URL.

    The URL is the credential (its path is the secret): an error that quotes it, or an answer
    that echoes it, must not carry it into the log or the alert's record, not even the start
    of it where an answer was cut off at ``SLACK_MAX_RESPONSE_BYTES``.
    """
    path = urlsplit(url).path
    parts = [url, path, *(part for part in path.split("/") if len(part) > 8)]
    parts = sorted((p for p in parts if len(p) > 1), key=len, reverse=True)
    for part in parts:
        text = text.replace(part, _REDACTED)
    for part in parts:
        cut = next((n for n in range(len(part) - 1, 7, -1) if text.endswith(part[:n])), 0)
        if cut:
            text = text[:-cut] + _REDACTED
            break
    text = " ".join(text.split())
    if len(text) > SLACK_ERROR_CHARS:
        text = text[: SLACK_ERROR_CHARS - 1] + "…"
    return text


def _slack_post(url: str, text: str) -> dict[str, Any]:
    """Post ``text`` to the incoming webhook; what happened, for the alert's record.

    ``{"slack": 200}`` when it was taken. Slack refuses a message with a 4xx and the reason as
    plain text (400 ``invalid_payload``, 403 ``action_prohibited``, 404 ``no_service``, 410
    ``channel_is_archived`` …); the status alone does not tell the operator what to fix, so the
    reason is kept too, as ``slack_error`` (as is the failure when no answer came).
    """
    try:
        response = safe_request(
            "POST",
            url,
            headers={"Content-Type": "application/json"},
            content=json.dumps({"text": text}).encode(),
            timeout=SLACK_TIMEOUT,
            max_response_bytes=SLACK_MAX_RESPONSE_BYTES,
        )
    except (ValidationFailed, OutboundHTTPError) as exc:
        reason = _without_url(str(exc), url)
        logger.warning("alert webhook failed: %s", reason)
        return {"slack_error": reason}
    if 200 <= response.status < 300:
        return {"slack": response.status}
    reason = _without_url(response.text(), url) or f"HTTP {response.status}"
    logger.warning("alert webhook answered HTTP %s: %s", response.status, reason)
    return {"slack": response.status, "slack_error": reason}


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


@dataclass(frozen=True)
class Damping:
    """How long a condition must hold before its alert opens, and be clear before it resolves:
    both so many checks in a row and at least so long since the first of them."""

    open_after_checks: int
    open_after: timedelta
    resolve_after_checks: int
    resolve_after: timedelta


def alert_damping() -> Damping:
    """From the settings (``ALERT_OPEN_AFTER_CHECKS`` …); below 1 check counts as 1."""
    s = django_settings
    return Damping(
        open_after_checks=max(1, int(getattr(s, "ALERT_OPEN_AFTER_CHECKS", 2))),
        open_after=timedelta(seconds=max(0.0, float(getattr(s, "ALERT_OPEN_AFTER_SECONDS", 0)))),
        resolve_after_checks=max(1, int(getattr(s, "ALERT_RESOLVE_AFTER_CHECKS", 3))),
        resolve_after=timedelta(
            seconds=max(0.0, float(getattr(s, "ALERT_RESOLVE_AFTER_SECONDS", 0)))
        ),
    )


def _observe(
    state: ConditionState | None, *, key: str, firing: bool, now: datetime
) -> ConditionState | None:
    """Count this check in the condition's run of checks that saw it ``firing`` (or clear).

    ``None`` when the check was counted already: by an evaluator that read the same row and
    updated it first (compare-and-set on ``checked_at``), or by one that ran at this instant or
    later.
    """
    if state is None:
        try:
            with transaction.atomic():
                return ConditionState.objects.create(
                    key=key, firing=firing, checks=1, since=now, checked_at=now
                )
        except IntegrityError:  # another evaluator saw it first
            return None
    if now <= state.checked_at:
        return None
    same = state.firing == firing
    checks = state.checks + 1 if same else 1
    since = state.since if same else now
    updated = ConditionState.objects.filter(pk=state.pk, checked_at=state.checked_at).update(
        firing=firing, checks=checks, since=since, checked_at=now
    )
    if not updated:
        return None
    state.firing, state.checks, state.since, state.checked_at = firing, checks, since, now
    return state


def _held(state: ConditionState, *, now: datetime, checks: int, duration: timedelta) -> bool:
    return state.checks >= checks and now - state.since >= duration


def _resolve(alert: Alert, *, now: datetime, settings: AlertSettings) -> bool:
    resolved = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now)
    if not resolved:  # resolved by another evaluator
        return False
    alert.resolved_at = now
    alert.notified = {
        **alert.notified,
        "resolved": _notify(alert, resolved=True, settings=settings),
    }
    alert.save(update_fields=["notified"])
    return True


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """One check: open alerts for conditions that held long enough, resolve those that were
    clear long enough; tell operators of both."""
    now = now or timezone.now()
    settings = selectors.alert_settings()
    if _ledger_check_due(settings, now):
        ledger_check_record(settings=settings, now=now)
    firing = {c.key: c for c in current_conditions(now=now, settings=settings)}
    damping = alert_damping()
    report = {"opened": 0, "resolved": 0, "open": 0}
    open_alerts = {a.key: a for a in Alert.objects.filter(resolved_at__isnull=True)}
    # Rows exist only for conditions that hold or have an alert open: a handful.
    states = {s.key: s for s in ConditionState.objects.all()}
    for key in sorted(firing.keys() | open_alerts.keys() | states.keys()):
        state = _observe(states.get(key), key=key, firing=key in firing, now=now)
        if state is None:
            continue
        alert = open_alerts.get(key)
        if state.firing:
            due = alert is None and _held(
                state, now=now, checks=damping.open_after_checks, duration=damping.open_after
            )
            if due and _open(firing[key], now=now, settings=settings) is not None:
                report["opened"] += 1
            continue
        if alert is not None:
            if not _held(
                state, now=now, checks=damping.resolve_after_checks, duration=damping.resolve_after
            ):
                continue  # clear, but not for long enough yet
            if _resolve(alert, now=now, settings=settings):
                report["resolved"] += 1
        # Clear, and no alert open any more: nothing left to remember.
        ConditionState.objects.filter(pk=state.pk, checked_at=now).delete()
    report["open"] = Alert.objects.filter(resolved_at__isnull=True).count()
    return report
