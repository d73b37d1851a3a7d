"""Flap damping of operator alerts, and why Slack refused a message.

An alert opens only after its condition held ``ALERT_OPEN_AFTER_CHECKS`` checks in a row (and
``ALERT_OPEN_AFTER_SECONDS``) and resolves only after it was clear ``ALERT_RESOLVE_AFTER_CHECKS``
checks (and ``ALERT_RESOLVE_AFTER_SECONDS``): a condition that comes and goes with every check
is not told every time. The condition driven here is the ledger audit's drift count, which the
evaluator reads from the alert settings at each check; checks run one minute apart.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone

from apps.engines.models import UpstreamAccount
from apps.monitoring.models import Alert, AlertSettings, ConditionState
from apps.monitoring.selectors import Condition, alert_settings
from apps.monitoring.services import alert_open, alert_settings_set_slack_url, alerts_evaluate

from .conftest import HOOK_PATH

pytestmark = pytest.mark.django_db

NOTHING = {"opened": 0, "resolved": 0, "open": 0}
STILL_OPEN = {"opened": 0, "resolved": 0, "open": 1}


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(
        email="ops@example.com", password="x" * 12, is_staff=True
    )


@pytest.fixture
def quiet(db) -> AlertSettings:
    """Nothing wrong to start with: the ledger audited a moment ago, no upstream accounts."""
    settings = alert_settings()
    settings.ledger_checked_at = timezone.now()
    settings.save()
    UpstreamAccount.objects.filter(is_sandbox_pool=False).delete()
    return settings


@pytest.fixture
def webhook(quiet, slack, settings) -> tuple[str, list[dict[str, str]]]:
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the fake Slack is on loopback
    alert_settings_set_slack_url(settings=quiet, url=slack[0])
    return slack


@pytest.fixture
def damped(settings) -> None:
    settings.ALERT_OPEN_AFTER_CHECKS = 3
    settings.ALERT_OPEN_AFTER_SECONDS = 0
    settings.ALERT_RESOLVE_AFTER_CHECKS = 3
    settings.ALERT_RESOLVE_AFTER_SECONDS = 0


class Checks:
    """The evaluator run once a minute, the ledger found drifting or not before each run."""

    def __init__(self, settings: AlertSettings) -> None:
        self.pk = settings.pk
        self.at: datetime = settings.ledger_checked_at

    def __call__(self, drifting: bool) -> dict[str, int]:
        AlertSettings.objects.filter(pk=self.pk).update(ledger_drifts=1 if drifting else 0)
        self.at += timedelta(minutes=1)
        return alerts_evaluate(now=self.at)


@pytest.fixture
def check(quiet) -> Checks:
    return Checks(quiet)


def _told(received: list[dict[str, str]]) -> list[str]:
    return [message["text"].split(":", 1)[0] for message in received]


def test_a_condition_that_flaps_every_check_is_never_told(staff, webhook, damped, check):
    for i in range(12):
        assert check(drifting=i % 2 == 0) == NOTHING
    assert not Alert.objects.exists()
    assert mail.outbox == []
    assert webhook[1] == []


def test_opens_after_n_checks_in_a_row_and_resolves_after_m_clear_ones(
    staff, webhook, damped, check
):
    _, received = webhook
    assert check(True) == NOTHING
    assert check(True) == NOTHING
    assert check(False) == NOTHING  # the run is broken: counting starts again
    assert check(True) == NOTHING
    assert check(True) == NOTHING
    assert check(True) == {"opened": 1, "resolved": 0, "open": 1}
    alert = Alert.objects.get()
    assert (alert.key, alert.opened_at) == ("ledger_drift", check.at)
    assert _told(received) == ["*ALERT*"]

    # Open: clear for a check or two and back again is not a recovery.
    for drifting in (False, True, False, False, True, True, False, True):
        assert check(drifting) == STILL_OPEN
    assert check(False) == STILL_OPEN
    assert check(False) == STILL_OPEN
    assert check(False) == {"opened": 0, "resolved": 1, "open": 0}
    alert.refresh_from_db()
    assert alert.resolved_at == check.at
    assert _told(received) == ["*ALERT*", "*RESOLVED*"]
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[mjgate] ALERT", "[mjgate] RESOLVED"]
    assert not ConditionState.objects.exists()  # clear and resolved: nothing to remember

    # Back again: a new alert needs its three checks again.
    assert check(True) == NOTHING
    assert check(True) == NOTHING
    assert check(True)["opened"] == 1
    assert Alert.objects.count() == 2


def test_a_minimum_duration_as_well_as_a_count(settings, staff, check):
    settings.ALERT_OPEN_AFTER_CHECKS = 1
    settings.ALERT_OPEN_AFTER_SECONDS = 300
    settings.ALERT_RESOLVE_AFTER_CHECKS = 1
    settings.ALERT_RESOLVE_AFTER_SECONDS = 120
    for _ in range(5):  # held 0, 60 … 240 s
        assert check(True) == NOTHING
    assert check(True)["opened"] == 1  # held 300 s
    assert check(False) == STILL_OPEN  # clear 0 s
    assert check(False) == STILL_OPEN  # clear 60 s
    assert check(False)["resolved"] == 1  # clear 120 s


def test_one_check_is_counted_once_however_many_evaluators_run_it(settings, quiet, staff):
    settings.ALERT_OPEN_AFTER_CHECKS = 2
    AlertSettings.objects.filter(pk=quiet.pk).update(ledger_drifts=1)
    at = quiet.ledger_checked_at + timedelta(minutes=1)
    assert alerts_evaluate(now=at) == NOTHING
    assert alerts_evaluate(now=at) == NOTHING  # the same check, run twice (a duplicate beat)
    assert alerts_evaluate(now=at - timedelta(seconds=1)) == NOTHING  # a late one
    state = ConditionState.objects.get()
    assert (state.key, state.firing, state.checks) == ("ledger_drift", True, 1)
    assert alerts_evaluate(now=at + timedelta(minutes=1))["opened"] == 1


def test_an_alert_opened_by_its_event_resolves_after_m_clear_checks(settings, quiet, staff):
    """An account's health change opens its alert at once (``alert_open``); its resolution is
    damped like any other."""
    settings.ALERT_RESOLVE_AFTER_CHECKS = 2
    at = quiet.ledger_checked_at
    condition = Condition(key="account:999", kind="account_unhealthy", title="x", detail="y")
    assert alert_open(condition=condition, now=at) is not None
    assert alerts_evaluate(now=at + timedelta(minutes=1)) == STILL_OPEN
    assert alerts_evaluate(now=at + timedelta(minutes=2))["resolved"] == 1


# --- why Slack refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ],
)
def test_slacks_reason_for_a_refusal_is_recorded(
    status, error, staff, slack_server, webhook, check, caplog
):
    _, received = webhook
    slack_server.refusals[HOOK_PATH] = (status, error)
    with caplog.at_level(logging.WARNING, logger="apps.monitoring.services"):
        assert check(True)["opened"] == 1
    alert = Alert.objects.get()
    assert alert.notified["opened"] == {"email": 1, "slack": status, "slack_error": error}
    assert received == []
    assert f"alert webhook answered HTTP {status}: {error}" in caplog.messages
    assert HOOK_PATH not in json.dumps(alert.notified) and HOOK_PATH not in caplog.text


def test_a_hook_that_does_not_exist(staff, slack, settings, quiet, check):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    url = slack[0].replace(HOOK_PATH, "/services/T000/B000/GONE")
    alert_settings_set_slack_url(settings=quiet, url=url)
    check(True)
    assert Alert.objects.get().notified["opened"] == {
        "email": 1,
        "slack": 404,
        "slack_error": "no_service",
    }


def test_the_reason_is_cut_short_and_never_carries_the_url(
    staff, slack_server, webhook, check, caplog
):
    url, _ = webhook
    slack_server.refusals[HOOK_PATH] = (400, f"no_service for {url}\n\n" + "x" * 500)
    with caplog.at_level(logging.WARNING, logger="apps.monitoring.services"):
        check(True)
    reason = Alert.objects.get().notified["opened"]["slack_error"]
    assert len(reason) == 200 and reason.endswith("…")
    assert reason.startswith("no_service for [webhook URL] xxxxx")
    assert HOOK_PATH not in caplog.text

    # An answer cut off at the size limit in the middle of an echoed URL: not even its start.
    Alert.objects.all().delete()
    slack_server.refusals[HOOK_PATH] = (400, " " * 4070 + url)
    check(False)
    check(True)
    reason = Alert.objects.get().notified["opened"]["slack_error"]
    assert reason == "[webhook URL]"
    assert url[:26] not in caplog.text
