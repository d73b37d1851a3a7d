"""Writes for webhooks: the signing secret, endpoints, publishing to the outbox, resend.

Publishing never sends anything. It writes the message (with its final body) and its first
pending attempt in the caller's transaction and asks, on commit, for a Celery worker to deliver
it (``apps.webhooks.delivery``). If that request is lost, the beat task finds the attempt in the
database a minute later.

The outbox is a leaf (docs STYLE, "Direction of imports"): the task domain and billing call it
with plain data, and nothing here imports them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max

from apps.accounts.models import Organization
from apps.core.crypto import encrypt_text
from apps.core.errors import ValidationFailed
from apps.core.http import OutboundHTTPError, UnsafeURL, check_url
from apps.core.messaging import send_after_commit

from . import clock
from .conf import (
    DELIVER_TASK,
    DISPATCH_LEASE,
    PURGE_BATCH,
    WORKER_TIME_BUDGET,
    retention,
    rotation_overlap,
)
from .models import (
    SUBSCRIBABLE_EVENT_TYPES,
    DeliveryState,
    DeliveryTrigger,
    EventState,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookGoneHook,
    WebhookSecret,
)
from .selectors import delivery_get, endpoint_get
from .signing import secret_generate

logger = logging.getLogger(__name__)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _msg_id() -> str:
    """``msg_`` + a ULID: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "msg_" + "".join(reversed(chars))


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":"))


def events_enqueue(*, event_ids: list[int], countdown: float | None = None) -> None:
    """Ask a worker to deliver these messages once the current transaction commits.

    The one way the outbox queues work. A lost message only costs time: the beat task finds
    the pending attempts in the database (``deliveries_dispatch_due``).
    """
    if event_ids:
        send_after_commit(DELIVER_TASK, list(event_ids), countdown=countdown)


# --- The signing secret ------------------------------------------------------------------------


def webhook_secret_ensure(*, organization: Organization) -> tuple[WebhookSecret, str | None]:
    """The organization's current secret, created if it has none (then also its plaintext)."""
    current = WebhookSecret.objects.filter(
        organization=organization, expires_at__isnull=True
    ).first()
    if current is not None:
        return current, None
    plaintext = secret_generate()
    try:
        with transaction.atomic():
            created = WebhookSecret.objects.create(
                organization=organization,
                secret_encrypted=encrypt_text(plaintext),
                created_at=clock.now(),
            )
    except IntegrityError:  # created concurrently: use theirs
        return WebhookSecret.objects.get(organization=organization, expires_at__isnull=True), None
    return created, plaintext


def webhook_secret_reveal(*, organization: Organization) -> str:
    """The current secret's plaintext, created if needed.

    For the dashboard (shown to admins, SPEC §7). The API shows a secret only once, when it is
    created or rotated.
    """
    current, plaintext = webhook_secret_ensure(organization=organization)
    return plaintext if plaintext is not None else current.reveal()


@transaction.atomic
def webhook_secret_rotate(*, organization: Organization) -> str:
    """Make a new current secret and return its plaintext (shown once).

    The previous secret keeps signing for the overlap window; any older one stops now, so at most
    two secrets are ever valid and rotating twice really retires a leaked secret.
    """
    # Serialise rotations of one organization (NO KEY UPDATE does not block foreign-key checks).
    Organization.objects.select_for_update(no_key=True).filter(pk=organization.pk).first()
    now = clock.now()
    WebhookSecret.objects.filter(organization=organization, expires_at__gt=now).update(
        expires_at=now
    )
    WebhookSecret.objects.filter(organization=organization, expires_at__lte=now).delete()
    WebhookSecret.objects.filter(organization=organization, expires_at__isnull=True).update(
        expires_at=now + rotation_overlap()
    )
    plaintext = secret_generate()
    WebhookSecret.objects.create(
        organization=organization, secret_encrypted=encrypt_text(plaintext), created_at=now
    )
    return plaintext


# --- Endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointCreated:
    endpoint: WebhookEndpoint
    # The organization's signing secret when this call created it (shown once), else None.
    secret: str | None


def _clean_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed("A URL is required.", details={"field": "url"})
    url = url.strip()
    try:
        check_url(url)
    except UnsafeURL as exc:
        raise UnsafeURL(exc.message, details={"field": "url"}) from exc
    except OutboundHTTPError as exc:
        raise ValidationFailed(
            f"{exc.message} Check the host name.", code="unresolvable_url", details={"field": "url"}
        ) from exc
    return url


def _clean_event_types(event_types: Any) -> list[str]:
    if event_types is None:
        return []
    if not isinstance(event_types, list | tuple) or not all(
        isinstance(t, str) for t in event_types
    ):
        raise ValidationFailed(
            "event_types must be a list of event type names.", details={"field": "event_types"}
        )
    cleaned: list[str] = []
    for event_type in event_types:
        if event_type not in SUBSCRIBABLE_EVENT_TYPES:
            raise ValidationFailed(
                f"Unknown event type '{event_type}'.",
                details={"field": "event_types", "allowed": list(SUBSCRIBABLE_EVENT_TYPES)},
            )
        if event_type not in cleaned:
            cleaned.append(event_type)
    return cleaned


def _clean_description(description: Any) -> str:
    if not isinstance(description, str):
        raise ValidationFailed("description must be a string.", details={"field": "description"})
    description = description.strip()
    if len(description) > 200:
        raise ValidationFailed(
            "description is limited to 200 characters.", details={"field": "description"}
        )
    return description


@transaction.atomic
def endpoint_create(
    *,
    organization: Organization,
    url: str,
    description: str = "",
    event_types: Iterable[str] | None = None,
    is_enabled: bool = True,
) -> EndpointCreated:
    cleaned_url = _clean_url(url)
    cleaned_types = _clean_event_types(list(event_types) if event_types is not None else None)
    cleaned_description = _clean_description(description)
    Organization.objects.select_for_update(no_key=True).filter(pk=organization.pk).first()
    limit = int(getattr(settings, "WEBHOOK_MAX_ENDPOINTS", 20))
    if WebhookEndpoint.objects.filter(organization=organization).count() >= limit:
        raise ValidationFailed(
            f"An organization can have at most {limit} webhook endpoints.",
            code="endpoint_limit",
        )
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=cleaned_url,
        description=cleaned_description,
        event_types=cleaned_types,
        is_enabled=bool(is_enabled),
    )
    _, secret = webhook_secret_ensure(organization=organization)
    return EndpointCreated(endpoint=endpoint, secret=secret)


@transaction.atomic
def endpoint_update(
    *,
    organization: Organization,
    endpoint_id: Any,
    url: str | None = None,
    description: str | None = None,
    event_types: Iterable[str] | None = None,
    is_enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given (None leaves a field alone). Enabling clears the failure record."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if url is not None:
        endpoint.url = _clean_url(url)
    if description is not None:
        endpoint.description = _clean_description(description)
    if event_types is not None:
        endpoint.event_types = _clean_event_types(list(event_types))
    if is_enabled is not None:
        if is_enabled and not endpoint.is_enabled:
            endpoint.disabled_reason = ""
            endpoint.disabled_at = None
            endpoint.failing_since = None
        elif not is_enabled and endpoint.is_enabled:
            endpoint.disabled_reason = "Disabled by the organization."
            endpoint.disabled_at = clock.now()
        endpoint.is_enabled = bool(is_enabled)
    endpoint.save()
    return endpoint


@transaction.atomic
def endpoint_delete(*, organization: Organization, endpoint_id: Any) -> None:
    """Deletes the endpoint with its messages and attempt log."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    endpoint.delete()


def _endpoint_event_type(endpoint: WebhookEndpoint, event_type: str) -> str | None:
    """The type this endpoint receives the event as, or None when it does not subscribe.

    ``task.updated`` means "every change of a task", so a subscriber of only that type receives
    a success, say, as ``task.updated``; a subscriber of the specific type gets that type.
    """
    if endpoint.subscribes_to(event_type):
        return event_type
    if event_type.startswith("task.") and EventType.TASK_UPDATED in endpoint.event_types:
        return EventType.TASK_UPDATED
    return None


def _envelope(event_type: str, data: dict[str, Any], now_iso: str) -> str:
    return _dumps({"type": event_type, "timestamp": now_iso, "data": data})


def _hook_key(url: str) -> str:
    return "hook:" + hashlib.sha256(url.encode()).hexdigest()[:40]


def _event_create(
    *,
    organization_id: int,
    event_type: str,
    body: str | Callable[[], str],
    target_key: str,
    url: str,
    task_id: str | None = None,
    task_status: str = "",
    endpoint: WebhookEndpoint | None = None,
    trigger: str = DeliveryTrigger.AUTO,
) -> WebhookEvent | None:
    """Write one message and its first attempt. ``None``: nothing written, because the task's
    own hook answered 410 Gone to an earlier message of the task (see ``WebhookGoneHook``)."""
    now = clock.now()
    sequence = 0
    progress_only = False
    if task_id is not None:
        # The caller holds the task's row lock, so reading the last message cannot race
        # another publisher of this task.
        chain = WebhookEvent.objects.filter(task_id=task_id, target_key=target_key)
        fields = ["sequence", "task_status"]
        if endpoint is None:  # the task's own hook: has it answered 410? (same statement)
            gone = WebhookGoneHook.objects.filter(task_id=task_id, target_key=target_key)
            chain = chain.annotate(gone=Exists(gone))
            fields.append("gone")
        last = chain.order_by("-sequence").values(*fields).first()
        if last is not None and last.get("gone"):
            return None
        if last is not None:
            sequence = last["sequence"] + 1
            progress_only = (
                event_type == EventType.TASK_UPDATED and last["task_status"] == task_status
            )
        else:
            sequence = 1
    event = WebhookEvent.objects.create(
        msg_id=_msg_id(),
        organization_id=organization_id,
        event_type=event_type,
        body=body if isinstance(body, str) else body(),
        task_id=task_id,
        endpoint=endpoint,
        url=url,
        target_key=target_key,
        sequence=sequence,
        task_status=task_status,
        progress_only=progress_only,
        created_at=now,
    )
    WebhookDelivery.objects.create(
        organization_id=organization_id,
        event=event,
        endpoint=endpoint,
        attempt=1,
        trigger=trigger,
        next_attempt_at=now,
        # Queued on commit; the beat task waits this long before queueing it again.
        dispatched_until=now + DISPATCH_LEASE,
        url=url,
        created_at=now,
    )
    if progress_only:
        _supersede_held_progress(event, now)
    return event


def _written(event: WebhookEvent | None) -> WebhookEvent:
    """A message to an organization endpoint: always written (only a task's hook can be gone)."""
    if event is None:  # pragma: no cover - a gone hook is recorded for task hooks only
        raise RuntimeError("an endpoint's message was not written")
    return event


def _supersede_held_progress(newest: WebhookEvent, now: datetime) -> int:
    """Retire the held progress-only messages directly ahead of ``newest`` (also progress-only).

    Only messages that wait behind an earlier pending one of the same chain and were never
    attempted qualify: the head of the chain (being sent or waiting for its retry) is left
    alone, a status change is never dropped, and what remains keeps its order. The receiver
    gets every status change and the newest progress instead of one message per step.
    """
    pending = list(
        WebhookEvent.objects.filter(
            task_id=newest.task_id,
            target_key=newest.target_key,
            state=EventState.PENDING,
            sequence__lt=newest.sequence,
        )
        .order_by("sequence")
        .values_list("pk", "progress_only")
    )
    # The progress-only run just ahead of ``newest``, without the chain's head.
    run: list[int] = []
    for pk, is_progress in reversed(pending[1:]):
        if not is_progress:
            break
        run.append(pk)
    if not run:
        return 0
    # The messages first, in id order, then their attempts: the lock order of every writer of
    # a message (``delivery._record_batch``, ``delivery._kill_chain``, ``delivery_resend``).
    list(
        WebhookEvent.objects.select_for_update()
        .filter(pk__in=run, state=EventState.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    # Lock the attempts: a worker claiming one at this moment wins, and it is kept.
    doomed = list(
        WebhookDelivery.objects.select_for_update(of=("self",))
        .filter(
            event_id__in=run,
            state=DeliveryState.PENDING,
            trigger=DeliveryTrigger.AUTO,
            attempt=1,
            attempted_at__isnull=True,
            claimed_until__isnull=True,
        )
        .values_list("pk", "event_id")
    )
    if not doomed:
        return 0
    WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in doomed]).update(
        state=DeliveryState.SUPERSEDED,
        dispatched_until=None,
        error=f"Not sent: superseded by the newer progress message {newest.msg_id}.",
    )
    WebhookEvent.objects.filter(
        pk__in=[event_id for _, event_id in doomed], state=EventState.PENDING
    ).update(state=EventState.SUPERSEDED, finished_at=now)
    return len(doomed)


def task_event_publish(
    *,
    organization_id: int,
    task_id: str,
    task_status: str,
    event_type: str,
    hook_url: str,
    hook_body: Callable[[], dict[str, Any]],
    native_body: Callable[[], dict[str, Any]],
    endpoints_none: bool = False,
) -> list[WebhookEvent]:
    """Write the outbox messages for one change of a task. Call inside the changing transaction,
    holding the task's row lock (``apps.tasks.events.task_changed`` does both).

    The outbox knows nothing of tasks: the caller gives the task's id and status (for ordering
    and coalescing), its own hook (``hook_url``, empty for none) and how to build the two bodies.
    The hook receives ``hook_body()``, the Task JSON of the dialect that created the task (no
    longer once it answered 410 Gone to a message of this task); the organization's enabled
    endpoints that subscribe receive ``native_body()`` in an envelope.
    Each builder runs at most once, and only when someone receives its body.
    """
    # No savepoint: the caller's transaction fails with us (one statement less per change).
    with transaction.atomic(savepoint=False):
        events: list[WebhookEvent] = []
        if hook_url:
            hook_event = _event_create(
                organization_id=organization_id,
                event_type=event_type,
                # Built once the hook is known to be there (not for one that answered 410).
                body=lambda: _dumps(hook_body()),
                target_key=_hook_key(hook_url),
                url=hook_url,
                task_id=task_id,
                task_status=task_status,
            )
            if hook_event is not None:
                events.append(hook_event)
        data: dict[str, Any] | None = None
        now_iso = clock.now().isoformat()
        # ``endpoints_none``: the caller read, in this transaction, that the organization has
        # no enabled endpoint (the submit does, with its organization lock).
        # (A plain empty list, not ``.none()``: iterating an empty queryset still compiles it.)
        endpoints: Iterable[WebhookEndpoint] = (
            ()
            if endpoints_none
            else WebhookEndpoint.objects.filter(
                organization_id=organization_id, is_enabled=True
            ).order_by("id")
        )
        for endpoint in endpoints:
            delivered_as = _endpoint_event_type(endpoint, event_type)
            if delivered_as is None:
                continue
            if data is None:
                data = native_body()
            events.append(
                _written(
                    _event_create(
                        organization_id=organization_id,
                        event_type=delivered_as,
                        body=_envelope(delivered_as, data, now_iso),
                        target_key=f"endpoint:{endpoint.pk}",
                        url=endpoint.url,
                        task_id=task_id,
                        task_status=task_status,
                        endpoint=endpoint,
                    )
                )
            )
        events_enqueue(event_ids=[event.pk for event in events])
    return events


def balance_low_publish(
    *, organization: Organization, available: int, held: int, threshold: int
) -> list[WebhookEvent]:
    """Tell subscribed endpoints that the available balance fell below ``threshold`` tokens."""
    with transaction.atomic():
        now_iso = clock.now().isoformat()
        data = {
            "organization": organization.pk,
            "available": available,
            "held": held,
            "threshold": threshold,
        }
        events = [
            _written(
                _event_create(
                    organization_id=organization.pk,
                    event_type=EventType.BALANCE_LOW,
                    body=_envelope(EventType.BALANCE_LOW, data, now_iso),
                    target_key=f"endpoint:{endpoint.pk}",
                    url=endpoint.url,
                    endpoint=endpoint,
                )
            )
            for endpoint in WebhookEndpoint.objects.filter(
                organization=organization, is_enabled=True
            ).order_by("id")
            if endpoint.subscribes_to(EventType.BALANCE_LOW)
        ]
        events_enqueue(event_ids=[event.pk for event in events])
    return events


@transaction.atomic
def endpoint_send_test_event(*, organization: Organization, endpoint_id: Any) -> WebhookDelivery:
    """Send a ``webhook.test`` message to one endpoint, enabled or not, once (no retries)."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    now_iso = clock.now().isoformat()
    data = {"message": "This is a test event from mjgate.", "endpoint": endpoint.pk}
    event = _written(
        _event_create(
            organization_id=organization.pk,
            event_type=EventType.TEST,
            body=_envelope(EventType.TEST, data, now_iso),
            target_key=f"endpoint:{endpoint.pk}",
            url=endpoint.url,
            endpoint=endpoint,
            trigger=DeliveryTrigger.MANUAL,
        )
    )
    events_enqueue(event_ids=[event.pk])
    return event.deliveries.get()


@transaction.atomic
def delivery_resend(*, organization: Organization, delivery_id: Any) -> WebhookDelivery:
    """Deliver the message of ``delivery_id`` again, with the same ``webhook-id``.

    If the message still has a scheduled retry, that retry is brought forward to now. Otherwise
    a new manual attempt is added; it is tried once and, if it fails, the message is dead again.
    """
    delivery = delivery_get(organization=organization, delivery_id=delivery_id)
    event = WebhookEvent.objects.select_for_update().get(pk=delivery.event_id)
    now = clock.now()
    pending = (
        WebhookDelivery.objects.select_for_update()
        .filter(event=event, state=DeliveryState.PENDING)
        .first()
    )
    if pending is not None:
        in_flight = pending.claimed_until is not None and pending.claimed_until > now
        if not in_flight:
            pending.next_attempt_at = now
            pending.dispatched_until = now + DISPATCH_LEASE
            pending.save(update_fields=["next_attempt_at", "dispatched_until"])
            events_enqueue(event_ids=[event.pk])
        return pending
    last = event.deliveries.aggregate(last=Max("attempt"))["last"] or 0
    event.state = EventState.PENDING
    event.finished_at = None
    event.save(update_fields=["state", "finished_at"])
    attempt = WebhookDelivery.objects.create(
        organization_id=event.organization_id,
        event=event,
        endpoint_id=event.endpoint_id,
        attempt=last + 1,
        trigger=DeliveryTrigger.MANUAL,
        next_attempt_at=now,
        dispatched_until=now + DISPATCH_LEASE,
        url=event.target_url,
        created_at=now,
    )
    events_enqueue(event_ids=[event.pk])
    return attempt


# --- Retention -----------------------------------------------------------------------------------


def webhook_messages_purge(
    *,
    older_than: timedelta | None = None,
    batch_size: int = PURGE_BATCH,
    time_budget: float = WORKER_TIME_BUDGET,
) -> int:
    """Delete finished messages (and their attempts) that finished more than ``older_than`` ago.

    Defaults to ``WEBHOOK_RETENTION_DAYS``; a retention of 0 keeps everything. A pending
    message is never deleted, whatever its age. Works in short batches, each in its own
    transaction, and stops after ``time_budget`` seconds; the next run carries on. Returns the
    number of messages deleted.
    """
    keep = older_than if older_than is not None else retention()
    if keep is None:
        return 0
    cutoff = clock.now() - keep
    started = time.monotonic()
    deleted = 0
    while time.monotonic() - started < time_budget:
        with transaction.atomic():
            # Locked, and re-checked under the lock: a resend that makes a message pending
            # again either waits for us or is skipped and keeps its message.
            ids = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(finished_at__lt=cutoff)
                .exclude(state=EventState.PENDING)
                .order_by("finished_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            WebhookDelivery.objects.filter(event_id__in=ids).delete()
            WebhookEvent.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
    if deleted:
        logger.info("webhook messages purged", extra={"deleted": deleted})
    return deleted
