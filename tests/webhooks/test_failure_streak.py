"""An endpoint is disabled only when it really has failed for ``WEBHOOK_DISABLE_AFTER_DAYS``:
a success in the same round, or one another worker recorded meanwhile, ends the streak. The
disable is a compare-and-set on the endpoint's row as it is now, not on what a claim read."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from apps.webhooks import delivery as delivery_module
from apps.webhooks.delivery import events_deliver
from apps.webhooks.models import EventType, WebhookEndpoint, WebhookEvent
from apps.webhooks.services import balance_low_publish, webhook_secret_ensure

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private", "fresh_pool")]


@pytest.fixture
def failing_endpoint(organization: Any, receiver: Any, clock: Any) -> WebhookEndpoint:
    """Failing for six days (one past the limit) when the test starts."""
    webhook_secret_ensure(organization=organization)
    return WebhookEndpoint.objects.create(
        organization=organization,
        url=receiver.url("/org"),
        event_types=[EventType.BALANCE_LOW],
        failing_since=clock.now - timedelta(days=6),
    )


def two_messages(organization: Any) -> list[WebhookEvent]:
    return [
        event
        for _ in range(2)
        for event in balance_low_publish(
            organization=organization, available=1, held=0, threshold=100
        )
    ]


def test_an_endpoint_that_answered_200_in_the_round_is_not_disabled(
    organization, receiver, failing_endpoint
):
    answers = iter([200, 500])
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> int:
        with lock:
            return next(answers)

    receiver.respond = respond
    events = two_messages(organization)
    events_deliver(event_ids=[e.pk for e in events])
    assert sorted(r["answered"] for r in receiver.requests) == [200, 500]
    failing_endpoint.refresh_from_db()
    assert (failing_endpoint.is_enabled, failing_endpoint.disabled_reason) == (True, "")


@pytest.mark.parametrize("last", ["success", "failure"])
def test_the_last_outcome_of_a_round_decides_the_streak(
    organization, clock, failing_endpoint, last
):
    """Failure then success: recovered (no streak). Success then failure: a new streak that
    starts now, not six days ago."""
    events = two_messages(organization)
    claims = delivery_module._claim_batch(clock.now, event_ids=[e.pk for e in events])
    success = delivery_module._Outcome(success=True, status_code=200)
    failure = delivery_module._Outcome(success=False, status_code=500, error="HTTP 500")
    # Made in the order they came back in; listed in claim order, as a round lists them.
    if last == "success":
        failure = delivery_module._Outcome(success=False, status_code=500, error="HTTP 500")
        success = delivery_module._Outcome(success=True, status_code=200)
    delivery_module._record_batch([(claims[0], success), (claims[1], failure)])
    failing_endpoint.refresh_from_db()
    assert failing_endpoint.is_enabled
    assert failing_endpoint.failing_since == (None if last == "success" else clock.now)


def test_a_streak_another_worker_ended_does_not_disable_the_endpoint(
    organization, clock, failing_endpoint
):
    """The claim read the six-day streak; a success recorded by another worker ended it before
    this failure is recorded."""
    [event] = balance_low_publish(organization=organization, available=1, held=0, threshold=100)
    [claim] = delivery_module._claim_batch(clock.now, event_ids=[event.pk])
    WebhookEndpoint.objects.filter(pk=failing_endpoint.pk).update(failing_since=None)
    failure = delivery_module._Outcome(success=False, status_code=500, error="HTTP 500")
    delivery_module._record_batch([(claim, failure)])
    failing_endpoint.refresh_from_db()
    assert (failing_endpoint.is_enabled, failing_endpoint.disabled_reason) == (True, "")
