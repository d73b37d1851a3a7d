"""Sending outbox messages: claim an attempt, POST it signed, record the outcome, schedule retries.

The sequence for one message (``event_deliver``):

1. *Claim*: in a short transaction, lock the message's pending attempt (``SKIP LOCKED``), check
   that it is due, that no earlier message of the same task to the same target is still pending
   (ordering), and stamp a lease (``claimed_until``, ``claim_token``). Commit.
2. *Send* outside any transaction, through the SSRF-safe client (no redirects, timeouts).
3. *Record*: compare-and-set on the claim token. Success ends the message; a failure logs the
   attempt and appends the next one at the back-off time, or ends the message as dead.

A worker killed anywhere leaves a pending attempt whose lease expires; the beat task
(``deliveries_dispatch_due``) queues it again. So delivery is at-least-once, never lost; a
receiver may see a message twice and deduplicates on ``webhook-id``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from apps.accounts.models import Membership, Role
from apps.core.http import OutboundHTTPError, UnsafeURL, safe_request

from . import clock
from .conf import (
    CLAIM_LEASE,
    DISPATCH_LEASE,
    RESPONSE_LOG_BYTES,
    SHORT_RETRY,
    WORKER_TIME_BUDGET,
    disable_after,
    request_timeout,
    retry_schedule,
)
from .models import (
    DeliveryState,
    DeliveryTrigger,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from .selectors import webhook_secrets_for_signing
from .services import events_enqueue, webhook_secret_ensure
from .signing import signature_header

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outcome:
    success: bool
    status_code: int | None = None
    latency_ms: int | None = None
    response_body: str = ""
    error: str = ""
    permanent: bool = False  # retrying cannot help (the URL is refused)

    @property
    def gone(self) -> bool:
        return self.status_code == 410


@dataclass(frozen=True)
class DeliveryResult:
    delivery: WebhookDelivery | None  # the attempt made (None: nothing was due or it is held)
    successor_id: int | None  # the next message of the same task and target, now unblocked


def _held(event: WebhookEvent) -> bool:
    """An earlier message of the same task to the same target is still pending."""
    if event.task_id is None:
        return False
    return WebhookEvent.objects.filter(
        task_id=event.task_id,
        target_key=event.target_key,
        sequence__lt=event.sequence,
        state=EventState.PENDING,
    ).exists()


def _successor(event: WebhookEvent) -> int | None:
    if event.task_id is None:
        return None
    return (
        WebhookEvent.objects.filter(
            task_id=event.task_id,
            target_key=event.target_key,
            sequence__gt=event.sequence,
            state=EventState.PENDING,
        )
        .order_by("sequence")
        .values_list("pk", flat=True)
        .first()
    )


def _finish_event(event: WebhookEvent, state: str, now: datetime) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(state=state, finished_at=now)
    event.state = state
    event.finished_at = now


# --- Disabling endpoints -------------------------------------------------------------------------


def _email_owners_endpoint_disabled(endpoint_id: int) -> None:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).select_related("organization").first()
    if endpoint is None:
        return
    recipients = list(
        Membership.objects.filter(
            organization_id=endpoint.organization_id, role=Role.OWNER, user__is_active=True
        )
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )
    if not recipients:
        return
    message = (
        f"Your webhook endpoint {endpoint.url} in the organization "
        f"'{endpoint.organization.name}' has been disabled.\n\n"
        f"Reason: {endpoint.disabled_reason}\n\n"
        "No further messages are sent to it. Fix the receiver, then enable the endpoint again "
        "in the dashboard or with the API; failed messages can be resent from the delivery log."
    )
    try:
        send_mail(
            subject=f"[mjgate] Webhook endpoint disabled: {endpoint.url}"[:200],
            message=message,
            from_email=None,
            recipient_list=recipients,
        )
    except Exception:  # mail trouble must not fail the delivery worker
        logger.exception("could not e-mail endpoint owners", extra={"endpoint_id": endpoint_id})


def endpoint_disable(*, endpoint_id: int, reason: str, now: datetime | None = None) -> bool:
    """Disable an enabled endpoint (compare-and-set) and e-mail the organization's owners."""
    disabled = WebhookEndpoint.objects.filter(pk=endpoint_id, is_enabled=True).update(
        is_enabled=False, disabled_reason=reason[:255], disabled_at=now or clock.now()
    )
    if disabled:
        logger.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint_id})
        transaction.on_commit(lambda: _email_owners_endpoint_disabled(endpoint_id))
    return bool(disabled)


def _note_failure(endpoint: WebhookEndpoint, now: datetime) -> None:
    """Track the endpoint's run of failures; one that fails for days is disabled."""
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
        return
    limit = disable_after()
    if endpoint.is_enabled and now - endpoint.failing_since >= limit:
        days = limit.total_seconds() / 86400
        endpoint_disable(
            endpoint_id=endpoint.pk,
            reason=f"Every delivery failed for {days:g} days (since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC).",
            now=now,
        )


# --- One message ---------------------------------------------------------------------------------


def _claim(
    event_id: int, now: datetime, *, wait: bool = False
) -> tuple[WebhookDelivery, WebhookEvent, str] | DeliveryResult:
    # ``wait``: block on another worker's claim transaction instead of skipping the row. Used
    # for a successor, which the other worker may have just found still held: once its short
    # transaction ends, either it claimed the attempt (we then see the lease and stop) or it
    # gave up, and the message is ours.
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=not wait, of=("self",))
            .filter(event_id=event_id, state=DeliveryState.PENDING, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .first()
        )
        if delivery is None:
            if wait:
                # A successor superseded by a newer progress message while we were sending
                # its predecessor: the chain goes on with the next pending one.
                superseded = WebhookEvent.objects.filter(
                    pk=event_id, state=EventState.SUPERSEDED
                ).first()
                if superseded is not None:
                    return DeliveryResult(delivery=None, successor_id=_successor(superseded))
            return DeliveryResult(delivery=None, successor_id=None)
        event = WebhookEvent.objects.select_related("endpoint").get(pk=event_id)
        if _held(event):
            return DeliveryResult(delivery=None, successor_id=None)
        endpoint = event.endpoint
        if (
            endpoint is not None
            and not endpoint.is_enabled
            and delivery.trigger == DeliveryTrigger.AUTO
        ):
            delivery.state = DeliveryState.DEAD
            delivery.error = "Not sent: the endpoint is disabled."
            delivery.save(update_fields=["state", "error"])
            _finish_event(event, EventState.DEAD, now)
            return DeliveryResult(delivery=delivery, successor_id=_successor(event))
        token = secrets.token_hex(16)
        delivery.claimed_until = now + CLAIM_LEASE
        delivery.claim_token = token
        delivery.attempted_at = now
        delivery.url = event.target_url
        delivery.save(update_fields=["claimed_until", "claim_token", "attempted_at", "url"])
    return delivery, event, token


def _send(delivery: WebhookDelivery, event: WebhookEvent) -> _Outcome:
    webhook_secret_ensure(organization=event.organization)
    signing_secrets = webhook_secrets_for_signing(organization=event.organization, now=clock.now())
    # Real wall-clock time: receivers check it against their clock to refuse replays.
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=signing_secrets, msg_id=event.msg_id, timestamp=timestamp, body=event.body
        ),
    }
    started = time.monotonic()
    try:
        response = safe_request(
            "POST",
            delivery.url,
            headers=headers,
            content=event.body.encode("utf-8"),
            timeout=request_timeout(),
            max_response_bytes=RESPONSE_LOG_BYTES,
        )
    except UnsafeURL as exc:
        return _Outcome(success=False, error=exc.message[:500], permanent=True)
    except OutboundHTTPError as exc:
        latency = int((time.monotonic() - started) * 1000)
        return _Outcome(success=False, error=exc.message[:500], latency_ms=latency)
    except Exception as exc:  # a bug must not leave the attempt claimed until the lease ends
        logger.exception("webhook send crashed", extra={"event_id": event.pk})
        return _Outcome(success=False, error=f"Internal error: {type(exc).__name__}")
    status = response.status
    body_text = response.body.decode("utf-8", errors="replace").replace("\x00", "")
    if 200 <= status < 300:
        error = ""
    elif 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed."
    else:
        error = f"HTTP {status}"
    return _Outcome(
        success=200 <= status < 300,
        status_code=status,
        latency_ms=response.elapsed_ms,
        response_body=body_text[:RESPONSE_LOG_BYTES],
        error=error,
    )


def _kill_chain(event: WebhookEvent, now: datetime, reason: str) -> None:
    """A task hook answered 410: nothing more goes to it for this task."""
    doomed = WebhookEvent.objects.filter(
        task_id=event.task_id, target_key=event.target_key, state=EventState.PENDING
    ).exclude(pk=event.pk)
    WebhookDelivery.objects.filter(event__in=doomed, state=DeliveryState.PENDING).update(
        state=DeliveryState.DEAD, error=reason
    )
    doomed.update(state=EventState.DEAD, finished_at=now)


def _record(delivery: WebhookDelivery, token: str, outcome: _Outcome) -> DeliveryResult:
    now = clock.now()
    schedule = retry_schedule()
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=delivery.event_id)
        if outcome.success:
            state = DeliveryState.SUCCEEDED
        elif (
            outcome.gone
            or outcome.permanent
            or delivery.trigger == DeliveryTrigger.MANUAL
            or delivery.attempt > len(schedule)
        ):
            state = DeliveryState.DEAD
        else:
            state = DeliveryState.FAILED
        recorded = WebhookDelivery.objects.filter(
            pk=delivery.pk, state=DeliveryState.PENDING, claim_token=token
        ).update(
            state=state,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            response_body=outcome.response_body,
            error=outcome.error,
            claimed_until=None,
        )
        if not recorded:  # our lease ran out and another worker took over; its outcome counts
            return DeliveryResult(delivery=None, successor_id=None)
        delivery.refresh_from_db()
        endpoint = (
            WebhookEndpoint.objects.filter(pk=event.endpoint_id).first()
            if event.endpoint_id
            else None
        )

        if state == DeliveryState.FAILED:
            delay = timedelta(seconds=schedule[delivery.attempt - 1])
            due = now + delay
            short = delay <= SHORT_RETRY
            WebhookDelivery.objects.create(
                organization_id=event.organization_id,
                event=event,
                endpoint_id=event.endpoint_id,
                attempt=delivery.attempt + 1,
                trigger=DeliveryTrigger.AUTO,
                next_attempt_at=due,
                dispatched_until=due + DISPATCH_LEASE if short else None,
                url=delivery.url,
                created_at=now,
            )
            if short:
                events_enqueue(event_ids=[event.pk], countdown=delay.total_seconds())
        else:
            _finish_event(event, EventState.SUCCEEDED if outcome.success else EventState.DEAD, now)

        if endpoint is not None:
            if outcome.success:
                if endpoint.failing_since is not None:
                    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
            else:
                _note_failure(endpoint, now)
                if outcome.gone:
                    endpoint_disable(
                        endpoint_id=endpoint.pk,
                        reason="The endpoint answered 410 Gone.",
                        now=now,
                    )
        elif outcome.gone and event.task_id is not None:
            _kill_chain(event, now, "Not sent: the hook answered 410 Gone to an earlier message.")

        successor = _successor(event) if event.state != EventState.PENDING else None
    return DeliveryResult(delivery=delivery, successor_id=successor)


def event_deliver(*, event_id: int, wait: bool = False) -> DeliveryResult:
    """Make the due attempt of one message, if there is one and nothing holds it back."""
    claimed = _claim(event_id, clock.now(), wait=wait)
    if isinstance(claimed, DeliveryResult):
        return claimed
    delivery, event, token = claimed
    outcome = _send(delivery, event)
    logger.info(
        "webhook attempt",
        extra={
            "event_id": event.pk,
            "attempt": delivery.attempt,
            "status_code": outcome.status_code,
            "success": outcome.success,
        },
    )
    return _record(delivery, token, outcome)


def events_deliver(
    *, event_ids: Iterable[int], time_budget: float = WORKER_TIME_BUDGET
) -> list[WebhookDelivery]:
    """Deliver these messages and, as each finishes, the next one of its task and target."""
    started = time.monotonic()
    queue: deque[tuple[int, bool]] = deque((event_id, False) for event_id in event_ids)
    attempted: list[WebhookDelivery] = []
    while queue and time.monotonic() - started < time_budget:
        event_id, is_successor = queue.popleft()
        result = event_deliver(event_id=event_id, wait=is_successor)
        if result.delivery is not None:
            attempted.append(result.delivery)
        if result.successor_id is not None:
            queue.append((result.successor_id, True))
    return attempted


def deliveries_dispatch_due(*, limit: int = 500) -> list[int]:
    """Event ids whose attempt is due and not held, marked as queued for ``DISPATCH_LEASE``.

    Run by the beat task. Attempts waiting on an earlier message of their task are skipped: the
    worker that finishes that message moves on to them.
    """
    now = clock.now()
    earlier_pending = WebhookEvent.objects.filter(
        task_id=OuterRef("event__task_id"),
        target_key=OuterRef("event__target_key"),
        sequence__lt=OuterRef("event__sequence"),
        state=EventState.PENDING,
    )
    with transaction.atomic():
        rows = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
            .filter(Q(dispatched_until__isnull=True) | Q(dispatched_until__lte=now))
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .filter(~Exists(earlier_pending))
            .order_by("next_attempt_at", "id")
            .values_list("pk", "event_id")[:limit]
        )
        if rows:
            WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in rows]).update(
                dispatched_until=now + DISPATCH_LEASE
            )
    return [event_id for _, event_id in rows]
