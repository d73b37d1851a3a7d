"""The balance.low webhook event: published once when available falls below the threshold."""

from __future__ import annotations

import json

import pytest

from apps.billing.ledger import ledger_adjust, ledger_hold, ledger_release, ledger_topup
from apps.webhooks.models import WebhookEvent
from apps.webhooks.services import endpoint_create

from .helpers import new_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(organization, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    settings.BALANCE_LOW_THRESHOLD = 35_000
    return endpoint_create(
        organization=organization,
        url="http://127.0.0.1:9/hook",
        event_types=["balance.low"],
    ).endpoint


def low_events(organization) -> list[dict]:
    return [
        json.loads(event.body)
        for event in WebhookEvent.objects.filter(
            organization=organization, event_type="balance.low"
        ).order_by("id")
    ]


def test_crossing_the_threshold_publishes_once_per_dip(organization, endpoint):
    ledger_topup(organization=organization, amount=40_000, idempotency_key="t1")
    assert low_events(organization) == []
    first = new_task(organization)
    ledger_hold(task=first, amount=14_000)  # 40,000 -> 26,000: crosses
    events = low_events(organization)
    assert len(events) == 1
    assert events[0]["type"] == "balance.low"
    assert events[0]["data"] == {
        "organization": organization.pk,
        "available": 26_000,
        "held": 14_000,
        "threshold": 35_000,
    }
    ledger_hold(task=new_task(organization), amount=14_000)  # still below: no new event
    assert len(low_events(organization)) == 1
    ledger_release(task=first)  # 12,000 -> 26,000: still below
    ledger_topup(organization=organization, amount=50_000, idempotency_key="t2")  # 76,000
    assert len(low_events(organization)) == 1
    ledger_adjust(
        organization=organization,
        amount=-60_000,
        reason="correction",
        operator=None,
        idempotency_key="adj-1",
    )  # 76,000 -> 16,000: a second dip
    assert [e["data"]["available"] for e in low_events(organization)] == [26_000, 16_000]


def test_a_threshold_of_zero_never_publishes(organization, endpoint, settings):
    settings.BALANCE_LOW_THRESHOLD = 0
    ledger_topup(organization=organization, amount=40_000, idempotency_key="t1")
    ledger_hold(task=new_task(organization), amount=39_000)
    assert low_events(organization) == []


def test_an_endpoint_not_subscribed_hears_nothing(organization, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    endpoint_create(
        organization=organization, url="http://127.0.0.1:9/hook", event_types=["task.updated"]
    )
    ledger_topup(organization=organization, amount=40_000, idempotency_key="t1")
    ledger_hold(task=new_task(organization), amount=14_000)
    assert low_events(organization) == []
