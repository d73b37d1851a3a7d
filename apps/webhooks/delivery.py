"""Sending outbox messages: claim attempts in batches, POST them signed, record the outcomes.

A delivery loop (``events_deliver``, ``deliveries_drain``) keeps up to ``BATCH_SIZE`` attempts
in flight:

1. *Claim*: one ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`` stamps a
   lease (``claimed_until``, ``claim_token``) on up to ``n`` due pending attempts whose message is
   not held back by an earlier pending message of the same task to the same target (ordering),
   and returns everything the send needs: the message, its URL, the endpoint's state.
2. *Send* outside any transaction, concurrently (a thread pool per process), through one
   keep-alive connection pool per process (:class:`apps.core.http.SafeSession`: the URL is
   vetted and its host resolved again for every request, a connection is reused only to an
   address vetted for that request). Each request has its own timeouts and total deadline,
   counted from when its POST begins (a send may first wait for a free thread). A send still
   waiting for a thread when the loop's time is up is cancelled and its claim given back; one
   that began is always waited for, so only real outcomes are recorded.
3. *Record* the outcomes that came back together (``GATHER_SECONDS``) in one short transaction
   of a few statements: compare-and-set on each claim token, finish the messages that ended,
   append the next attempt of those that failed at the back-off time (or end them as dead),
   and find each finished message's successor, which the loop claims next. A slow receiver
   keeps only its own slot: the loop claims more work while it waits.

A worker killed anywhere leaves pending attempts whose lease expires; the beat task
(``deliveries_dispatch_due``) queues them again. So delivery is at-least-once, never lost; a
receiver may see a message twice and deduplicates on ``webhook-id``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q

from apps.accounts.models import Membership, Organization, Role
from apps.core.http import OutboundHTTPError, SafeSession, UnsafeURL

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
    WebhookGoneHook,
)
from .selectors import webhook_secrets_for_signing_many
from .services import events_enqueue, webhook_secret_ensure
from .signing import signature_header

logger = logging.getLogger(__name__)

#: Attempts one delivery loop has in flight at most (claimed, and sent concurrently).
BATCH_SIZE = 64
#: Once the first outcome of a round is back, how long the loop waits for the others before it
#: records what it has: receivers that answer together are recorded together, and a slow one
#: (up to its whole timeout) holds only its own slot.
GATHER_SECONDS = 1.0
#: While sends are still in flight, a draining loop looks for newly due attempts this often.
DRAIN_POLL_SECONDS = 0.25
#: How long past its own total deadline (counted from when its POST began) a running send is
#: waited for. Every request ends by that deadline; this bound only guards against a bug.
SEND_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class _Outcome:
    success: bool
    status_code: int | None = None
    latency_ms: int | None = None
    response_body: str = ""
    error: str = ""
    permanent: bool = False  # retrying cannot help (the URL is refused)
    skipped: bool = False  # not sent at all (the endpoint is disabled, the hook is gone)
    # When the outcome was known (``time.monotonic()``): orders the outcomes of one round.
    ended: float = field(default_factory=time.monotonic, compare=False)

    @property
    def gone(self) -> bool:
        return self.status_code == 410


_DISABLED_ERROR = "Not sent: the endpoint is disabled."
_HOOK_GONE_ERROR = "Not sent: the hook answered 410 Gone to an earlier message."


@dataclass(frozen=True)
class _Claim:
    """A claimed attempt and what sending it needs (one row of the claim statement)."""

    delivery_id: int
    attempt: int
    trigger: str
    url: str
    event_id: int
    msg_id: str
    body: str
    organization_id: int
    task_id: str | None
    target_key: str
    sequence: int
    endpoint_id: int | None
    endpoint_enabled: bool | None
    failing_since: datetime | None
    hook_gone: bool  # an automatic attempt to a task hook that answered 410 Gone before
    # The row's attempt time and URL before this claim stamped them: a claim given back unsent
    # puts them back (there was no attempt).
    prev_attempted_at: datetime | None
    prev_url: str
    token: str

    @property
    def endpoint_disabled(self) -> bool:
        return (
            self.endpoint_id is not None
            and self.endpoint_enabled is False
            and self.trigger == DeliveryTrigger.AUTO
        )

    @property
    def not_to_send(self) -> str:
        """Why this attempt is ended without a request, or ``""`` when it is to be sent."""
        if self.endpoint_disabled:
            return _DISABLED_ERROR
        return _HOOK_GONE_ERROR if self.hook_gone else ""


@dataclass(frozen=True)
class DeliveryResult:
    delivery: WebhookDelivery | None  # the attempt made (None: nothing was due or it is held)
    successor_id: int | None  # the next message of the same task and target, now unblocked


@dataclass(frozen=True)
class _Recorded:
    delivery_ids: list[int]  # attempts whose outcome was recorded, in claim order
    successor_ids: list[int]  # next messages of the chains that moved on


def _tables() -> dict[str, str]:
    return {
        "delivery": connection.ops.quote_name(WebhookDelivery._meta.db_table),
        "event": connection.ops.quote_name(WebhookEvent._meta.db_table),
        "endpoint": connection.ops.quote_name(WebhookEndpoint._meta.db_table),
        "gone": connection.ops.quote_name(WebhookGoneHook._meta.db_table),
    }


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


def endpoint_disable(
    *,
    endpoint_id: int,
    reason: str,
    now: datetime | None = None,
    failing_since_by: datetime | None = None,
) -> bool:
    """Disable an enabled endpoint (compare-and-set) and e-mail the organization's owners.

    ``failing_since_by``: only if the endpoint, as it is now, has been failing since then or
    earlier (a success recorded meanwhile ended that streak).
    """
    enabled = WebhookEndpoint.objects.filter(pk=endpoint_id, is_enabled=True)
    if failing_since_by is not None:
        enabled = enabled.filter(failing_since__isnull=False, failing_since__lte=failing_since_by)
    disabled = enabled.update(
        is_enabled=False, disabled_reason=reason[:255], disabled_at=now or clock.now()
    )
    if disabled:
        logger.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint_id})
        transaction.on_commit(lambda: _email_owners_endpoint_disabled(endpoint_id))
    return bool(disabled)


def _note_failure(claim: _Claim, now: datetime) -> None:
    """Track the endpoint's run of failures; one that fails for days is disabled.

    The claim's ``failing_since`` was read when it was claimed; the row decides (both writes
    are compare-and-set on it).
    """
    if claim.endpoint_id is None:
        return
    if claim.failing_since is None:
        WebhookEndpoint.objects.filter(pk=claim.endpoint_id, failing_since__isnull=True).update(
            failing_since=now
        )
        return
    limit = disable_after()
    if claim.endpoint_enabled and now - claim.failing_since >= limit:
        days = limit.total_seconds() / 86400
        endpoint_disable(
            endpoint_id=claim.endpoint_id,
            reason=f"Every delivery failed for {days:g} days (since {claim.failing_since:%Y-%m-%d %H:%M} UTC).",
            now=now,
            failing_since_by=now - limit,
        )


# --- Claiming ------------------------------------------------------------------------------------

_CLAIM_SQL = """
WITH pick AS (
    SELECT d.id, d.attempted_at AS prev_attempted_at, d.url AS prev_url
    FROM {delivery} d
    JOIN {event} e ON e.id = d.event_id
    WHERE d.state = %(pending)s
      AND d.next_attempt_at <= %(now)s
      AND (d.claimed_until IS NULL OR d.claimed_until <= %(now)s)
      {only_events}
      AND (e.task_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM {event} p
          WHERE p.task_id = e.task_id
            AND p.target_key = e.target_key
            AND p.sequence < e.sequence
            AND p.state = %(pending)s
      ))
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE OF d {skip_locked}
)
UPDATE {delivery} d
SET claimed_until = %(lease)s,
    claim_token = %(token)s,
    attempted_at = CASE WHEN {not_sent} THEN d.attempted_at ELSE %(now)s END,
    url = CASE WHEN {not_sent} THEN d.url ELSE COALESCE(ep.url, e.url) END
FROM pick, {event} e
    LEFT JOIN {endpoint} ep ON ep.id = e.endpoint_id
    LEFT JOIN {gone} g
        ON e.endpoint_id IS NULL AND g.task_id = e.task_id AND g.target_key = e.target_key
WHERE d.id = pick.id AND e.id = d.event_id
RETURNING d.id, d.attempt, d.trigger, d.url, e.id, e.msg_id, e.body, e.organization_id,
    e.task_id, e.target_key, e.sequence, e.endpoint_id, ep.is_enabled, ep.failing_since,
    {hook_gone}, pick.prev_attempted_at, pick.prev_url
"""
# An automatic attempt to a disabled endpoint, or to a task hook that answered 410 Gone to an
# earlier message of its task, is claimed only to be ended, never sent.
_DISABLED_SQL = "(ep.id IS NOT NULL AND NOT ep.is_enabled AND d.trigger = %(auto)s)"
_HOOK_GONE_SQL = "(g.id IS NOT NULL AND d.trigger = %(auto)s)"


def _claim_batch(
    now: datetime,
    *,
    event_ids: Sequence[int] | None = None,
    limit: int = BATCH_SIZE,
    wait: bool = False,
) -> list[_Claim]:
    """Claim up to ``limit`` due, unheld attempts (of ``event_ids`` only, when given): one
    statement.

    ``wait``: block on another worker's lock instead of skipping the row. Used for a successor,
    which another worker may be claiming at this moment: once its statement ends, either it
    claimed the attempt (we then see the lease and leave it) or the message is ours.
    """
    if event_ids is not None and not event_ids:
        return []
    token = secrets.token_hex(16)
    sql = _CLAIM_SQL.format(
        **_tables(),
        only_events="AND d.event_id = ANY(%(event_ids)s)" if event_ids is not None else "",
        skip_locked="" if wait else "SKIP LOCKED",
        not_sent=f"({_DISABLED_SQL} OR {_HOOK_GONE_SQL})",
        hook_gone=_HOOK_GONE_SQL,
    )
    params: dict[str, Any] = {
        "pending": DeliveryState.PENDING,
        "auto": DeliveryTrigger.AUTO,
        "now": now,
        "lease": now + CLAIM_LEASE,
        "token": token,
        "limit": limit,
        "event_ids": list(event_ids) if event_ids is not None else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # Each row holds the fields of _Claim in order, all but the token.
    claims = [_Claim(*cast(Any, (*row, token))) for row in rows]
    claims.sort(key=lambda claim: claim.delivery_id)
    return claims


# --- Sending -------------------------------------------------------------------------------------

_session = SafeSession()
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """The process's sending threads (made again in a forked child: threads do not survive)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = int(getattr(settings, "WEBHOOK_SEND_CONCURRENCY", 16))
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="webhook-send"),
            )
        return _pool[1]


def _signing_secrets(claims: Iterable[_Claim], now: datetime) -> dict[int, list[str]]:
    organization_ids = {claim.organization_id for claim in claims}
    found = webhook_secrets_for_signing_many(organization_ids=organization_ids, now=now)
    missing = organization_ids - set(found)
    if missing:  # an organization's first message: its secret is made now
        for organization in Organization.objects.filter(pk__in=missing):
            webhook_secret_ensure(organization=organization)
        found.update(webhook_secrets_for_signing_many(organization_ids=missing, now=now))
    return found


def _post(claim: _Claim, signing_secrets: list[str]) -> _Outcome:
    """One signed POST. Runs in a sending thread: no database access here."""
    # Real wall-clock time: receivers check it against their clock to refuse replays.
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": claim.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=signing_secrets, msg_id=claim.msg_id, timestamp=timestamp, body=claim.body
        ),
    }
    started = time.monotonic()
    try:
        response = _session.request(
            "POST",
            claim.url,
            headers=headers,
            content=claim.body.encode("utf-8"),
            timeout=request_timeout(),
            max_response_bytes=RESPONSE_LOG_BYTES,
        )
    except UnsafeURL as exc:
        return _Outcome(success=False, error=exc.message[:500], permanent=True)
    except OutboundHTTPError as exc:
        latency = int((time.monotonic() - started) * 1000)
        return _Outcome(success=False, error=exc.message[:500], latency_ms=latency)
    except Exception as exc:  # a bug must not leave the attempt claimed until the lease ends
        logger.exception("webhook send crashed", extra={"event_id": claim.event_id})
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


def _log_attempt(claim: _Claim, outcome: _Outcome) -> None:
    logger.info(
        "webhook attempt",
        extra={
            "event_id": claim.event_id,
            "attempt": claim.attempt,
            "status_code": outcome.status_code,
            "success": outcome.success,
        },
    )


class _Send:
    """One send handed to the sending threads. ``started`` is stamped by the thread that runs
    it, when its POST begins: a send waiting for a free thread has not started its clock."""

    __slots__ = ("claim", "started")

    def __init__(self, claim: _Claim) -> None:
        self.claim = claim
        self.started: float | None = None


def _run_send(send: _Send, signing_secrets: list[str]) -> _Outcome:
    send.started = time.monotonic()
    return _post(send.claim, signing_secrets)


_GIVE_BACK_SQL = """
UPDATE {delivery} d
SET claimed_until = NULL, claim_token = '', dispatched_until = %s, attempted_at = %s, url = %s
WHERE d.state = %s AND d.id = %s AND d.claim_token = %s
RETURNING d.event_id
"""


def _give_back(claims: Sequence[_Claim]) -> None:
    """Release claims that were never sent (their sends were cancelled before they began) and
    queue their messages again. Nothing is recorded: there was no attempt."""
    now = clock.now()
    event_ids: list[int] = []
    sql = _GIVE_BACK_SQL.format(**_tables())
    with transaction.atomic(), connection.cursor() as cursor:
        # One statement a claim: give-backs are rare (a loop stopping with sends not begun),
        # and each puts back its own row's earlier attempt time and URL.
        for claim in sorted(claims, key=lambda claim: claim.delivery_id):
            cursor.execute(
                sql,
                [
                    now + DISPATCH_LEASE,
                    claim.prev_attempted_at,
                    claim.prev_url,
                    DeliveryState.PENDING,
                    claim.delivery_id,
                    claim.token,
                ],
            )
            event_ids += [row[0] for row in cursor.fetchall()]
        events_enqueue(event_ids=event_ids)
    logger.info("webhook sends given back unsent", extra={"count": len(event_ids)})


class _InFlight:
    """The sends a delivery loop has started and not recorded yet.

    Outcomes are collected as they come back: those that end together (the usual case) are
    recorded together, while a slow receiver, which may take its whole timeout, keeps only its
    own slot and is recorded when it ends; the loop refills the other slots meanwhile.

    The sending threads are fewer than the attempts a loop may claim (and are shared by the
    process's loops), so a send may wait for a thread. Its deadline runs from when its POST
    begins, never from when it was queued, and a running send is always waited for: its real
    outcome is recorded, none is made up while the request may still reach the receiver. A
    send still waiting for a thread when the loop must stop (``start_by``) is cancelled and its
    claim given back: it was never sent, so nothing is recorded and nobody sends it twice.
    """

    def __init__(self) -> None:
        self.sending: dict[Future[_Outcome], _Send] = {}

    def __len__(self) -> int:
        return len(self.sending)

    def waiting(self) -> int:
        """Sends still waiting for a sending thread."""
        return sum(1 for send in self.sending.values() if send.started is None)

    def start(self, claims: Sequence[_Claim]) -> list[tuple[_Claim, _Outcome]]:
        """Start sending ``claims``; returns the outcomes known at once (nothing to send)."""
        ready = [
            (claim, _Outcome(success=False, error=claim.not_to_send, skipped=True))
            for claim in claims
            if claim.not_to_send
        ]
        to_send = [claim for claim in claims if not claim.not_to_send]
        if not to_send:
            return ready
        keys = _signing_secrets(to_send, clock.now())
        if len(to_send) == 1 and not self.sending:  # alone: no thread hop
            claim = to_send[0]
            outcome = _post(claim, keys.get(claim.organization_id, []))
            _log_attempt(claim, outcome)
            return [*ready, (claim, outcome)]
        executor = _executor()
        for claim in to_send:
            send = _Send(claim)
            future = executor.submit(_run_send, send, keys.get(claim.organization_id, []))
            self.sending[future] = send
        return ready

    def _wait_for(self, now: float, start_by: float | None) -> float | None:
        """Seconds until the next deadline of a send in flight (None: none has one yet)."""
        limit = request_timeout().total + SEND_GRACE_SECONDS
        deadlines = [
            send.started + limit for send in self.sending.values() if send.started is not None
        ]
        if start_by is not None and self.waiting():
            deadlines.append(start_by)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def collect(
        self, *, at_most: float | None = None, start_by: float | None = None
    ) -> list[tuple[_Claim, _Outcome]]:
        """Wait for the next outcome (``at_most`` seconds, when given), then up to
        ``GATHER_SECONDS`` for the others. From ``start_by`` (a ``time.monotonic()``) on, sends
        that have not begun are cancelled and their claims given back."""
        if not self.sending:
            return []
        timeout = self._wait_for(time.monotonic(), start_by)
        if at_most is not None:
            timeout = at_most if timeout is None else min(timeout, at_most)
        done, pending = wait(self.sending, timeout=timeout, return_when=FIRST_COMPLETED)
        if done and pending:
            more, _ = wait(pending, timeout=GATHER_SECONDS)
            done |= more
        results: list[tuple[_Claim, _Outcome]] = []
        for future in done:
            results.append((self.sending.pop(future).claim, future.result()))
        now = time.monotonic()
        unsent: list[_Claim] = []
        if start_by is not None and now >= start_by:
            for future, send in list(self.sending.items()):
                if future.cancel():  # it never began: nothing went out
                    del self.sending[future]
                    unsent.append(send.claim)
        limit = request_timeout().total + SEND_GRACE_SECONDS
        for future, send in list(self.sending.items()):
            if send.started is not None and now > send.started + limit:
                # A bug: the request outlived its own deadline. Whether it reached the
                # receiver is unknown, so no outcome is made up; the claim is left to its
                # lease, after which the message is sent again (at-least-once).
                del self.sending[future]
                logger.error(
                    "webhook send did not finish; left to its claim's lease",
                    extra={"event_id": send.claim.event_id},
                )
        if unsent:
            _give_back(unsent)
        results.sort(key=lambda result: result[0].delivery_id)
        for claim, outcome in results:
            _log_attempt(claim, outcome)
        return results


# --- Recording -----------------------------------------------------------------------------------


def _kill_chain(claim: _Claim, now: datetime) -> None:
    """A task hook answered 410: nothing more goes to it for this task.

    Recorded for the chain (``WebhookGoneHook``): no later message of the task is written for
    the hook, and one written meanwhile is ended unsent when claimed. The messages already
    waiting are ended now: locked first, then their attempts, the lock order of every writer
    of a message (a resend locks a message, then its attempt).
    """
    assert claim.task_id is not None
    WebhookGoneHook.objects.bulk_create(
        [
            WebhookGoneHook(
                organization_id=claim.organization_id,
                task_id=claim.task_id,
                target_key=claim.target_key,
                gone_at=now,
            )
        ],
        ignore_conflicts=True,
    )
    doomed = list(
        WebhookEvent.objects.select_for_update()
        .filter(task_id=claim.task_id, target_key=claim.target_key, state=EventState.PENDING)
        .exclude(pk=claim.event_id)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not doomed:
        return
    WebhookDelivery.objects.filter(event_id__in=doomed, state=DeliveryState.PENDING).update(
        state=DeliveryState.DEAD, error=_HOOK_GONE_ERROR
    )
    WebhookEvent.objects.filter(pk__in=doomed).update(state=EventState.DEAD, finished_at=now)


def _state_of(claim: _Claim, outcome: _Outcome, schedule: tuple[int, ...]) -> str:
    if outcome.success:
        return DeliveryState.SUCCEEDED
    if (
        outcome.skipped
        or outcome.gone
        or outcome.permanent
        or claim.trigger == DeliveryTrigger.MANUAL
        or claim.attempt > len(schedule)
    ):
        return DeliveryState.DEAD
    return DeliveryState.FAILED


def _update_from_values(
    sql: str, row_template: str, rows: Sequence[Sequence[Any]], *, returning: bool = False
) -> list[Any]:
    """Run ``sql`` with ``{values}`` replaced by one ``VALUES`` list of ``rows``."""
    values = ", ".join([row_template] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(sql.format(values=values, **_tables()), [v for row in rows for v in row])
        return [row[0] for row in cursor.fetchall()] if returning else []


_RECORD_SQL = """
UPDATE {delivery} d
SET state = v.state, status_code = v.status_code, latency_ms = v.latency_ms,
    response_body = v.response_body, error = v.error, claimed_until = NULL
FROM (VALUES {values}) AS v(id, token, state, status_code, latency_ms, response_body, error)
WHERE d.id = v.id AND d.state = 'pending' AND d.claim_token = v.token
RETURNING d.id
"""
_RECORD_ROW = (
    "(%s::bigint, %s::varchar, %s::varchar, %s::integer, %s::integer, %s::text, %s::varchar)"
)
_FINISH_SQL = """
UPDATE {event} e SET state = v.state, finished_at = v.finished_at
FROM (VALUES {values}) AS v(id, state, finished_at)
WHERE e.id = v.id
"""
_FINISH_ROW = "(%s::bigint, %s::varchar, %s::timestamptz)"
_SUCCESSORS_SQL = """
SELECT DISTINCT ON (s.task_id, s.target_key) s.id
FROM {event} s
JOIN unnest(%s::varchar[], %s::varchar[], %s::integer[]) AS f(task_id, target_key, sequence)
  ON s.task_id = f.task_id AND s.target_key = f.target_key AND s.sequence > f.sequence
WHERE s.state = %s
ORDER BY s.task_id, s.target_key, s.sequence
"""


def _record_batch(results: Sequence[tuple[_Claim, _Outcome]]) -> _Recorded:
    """Record the outcomes of one round in one transaction; claims whose lease ran out (another
    worker took over, and its outcome counts) are left alone."""
    if not results:
        return _Recorded(delivery_ids=[], successor_ids=[])
    now = clock.now()
    schedule = retry_schedule()
    states = {claim.delivery_id: _state_of(claim, outcome, schedule) for claim, outcome in results}
    with transaction.atomic():
        # The messages first, in id order, as every other writer of a message does.
        list(
            WebhookEvent.objects.select_for_update()
            .filter(pk__in={claim.event_id for claim, _ in results})
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        recorded = set(
            _update_from_values(
                _RECORD_SQL,
                _RECORD_ROW,
                [
                    (
                        claim.delivery_id,
                        claim.token,
                        states[claim.delivery_id],
                        outcome.status_code,
                        outcome.latency_ms,
                        outcome.response_body,
                        outcome.error,
                    )
                    for claim, outcome in results
                ],
                returning=True,
            )
        )
        done = [(c, o) for c, o in results if c.delivery_id in recorded]
        retries: list[WebhookDelivery] = []
        short_retries: dict[float, list[int]] = defaultdict(list)
        finished: list[tuple[int, str, datetime]] = []
        for claim, outcome in done:
            if states[claim.delivery_id] == DeliveryState.FAILED:
                delay = timedelta(seconds=schedule[claim.attempt - 1])
                due = now + delay
                short = delay <= SHORT_RETRY
                retries.append(
                    WebhookDelivery(
                        organization_id=claim.organization_id,
                        event_id=claim.event_id,
                        endpoint_id=claim.endpoint_id,
                        attempt=claim.attempt + 1,
                        trigger=DeliveryTrigger.AUTO,
                        next_attempt_at=due,
                        dispatched_until=due + DISPATCH_LEASE if short else None,
                        url=claim.url,
                        created_at=now,
                    )
                )
                if short:
                    short_retries[delay.total_seconds()].append(claim.event_id)
            else:
                state = EventState.SUCCEEDED if outcome.success else EventState.DEAD
                finished.append((claim.event_id, state, now))
        if retries:
            WebhookDelivery.objects.bulk_create(retries)
        for countdown, event_ids in short_retries.items():
            events_enqueue(event_ids=event_ids, countdown=countdown)
        if finished:
            _update_from_values(_FINISH_SQL, _FINISH_ROW, finished)
        _endpoint_effects(done, now)
        finished_ids = {event_id for event_id, _, _ in finished}
        successors = _successors([claim for claim, _ in done if claim.event_id in finished_ids])
    order = [claim.delivery_id for claim, _ in results if claim.delivery_id in recorded]
    return _Recorded(delivery_ids=order, successor_ids=successors)


def _endpoint_effects(done: Sequence[tuple[_Claim, _Outcome]], now: datetime) -> None:
    """Failure streaks, disabling after days of failures or on 410, a task hook's 410.

    An endpoint's outcomes in one round are taken in the order they came back: the last one
    decides. Ending in a success, the endpoint is not failing (a failure before it in the
    round starts no streak); a failure after a success starts a new streak now; failures
    only carry the streak on.
    """
    by_endpoint: dict[int, list[tuple[_Claim, _Outcome]]] = defaultdict(list)
    for claim, outcome in done:
        if outcome.skipped:
            continue
        if claim.endpoint_id is not None:
            by_endpoint[claim.endpoint_id].append((claim, outcome))
            if outcome.gone:
                endpoint_disable(
                    endpoint_id=claim.endpoint_id,
                    reason="The endpoint answered 410 Gone.",
                    now=now,
                )
        elif outcome.gone and claim.task_id is not None:
            _kill_chain(claim, now)
    recovered: set[int] = set()
    restarted: set[int] = set()
    failing: list[_Claim] = []
    for endpoint_id, results in by_endpoint.items():
        results.sort(key=lambda result: result[1].ended)
        successes = [i for i, (_, outcome) in enumerate(results) if outcome.success]
        if not successes:
            failing.append(results[0][0])
        elif successes[-1] < len(results) - 1:
            restarted.add(endpoint_id)
        elif any(claim.failing_since is not None for claim, _ in results):
            recovered.add(endpoint_id)
    if recovered:
        WebhookEndpoint.objects.filter(pk__in=recovered, failing_since__isnull=False).update(
            failing_since=None
        )
    if restarted:
        WebhookEndpoint.objects.filter(pk__in=restarted).update(failing_since=now)
    for claim in failing:
        _note_failure(claim, now)


def _successors(finished: Sequence[_Claim]) -> list[int]:
    """The next pending message of each chain whose message just ended (one query)."""
    chains = [claim for claim in finished if claim.task_id is not None]
    if not chains:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _SUCCESSORS_SQL.format(**_tables()),
            [
                [claim.task_id for claim in chains],
                [claim.target_key for claim in chains],
                [claim.sequence for claim in chains],
                EventState.PENDING,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


# --- Entry points --------------------------------------------------------------------------------


def _round(claims: list[_Claim]) -> _Recorded:
    in_flight = _InFlight()
    results = in_flight.start(claims)
    while len(in_flight):
        results += in_flight.collect()
    return _record_batch(results)


def event_deliver(*, event_id: int, wait: bool = False) -> DeliveryResult:
    """Make the due attempt of one message, if there is one and nothing holds it back.

    ``wait`` is for a worker following a chain (see :func:`_claim_batch`); a successor that was
    superseded meanwhile hands over to the next pending message of its chain.
    """
    claims = _claim_batch(clock.now(), event_ids=[event_id], limit=1, wait=wait)
    if not claims:
        if wait:
            superseded = (
                WebhookEvent.objects.filter(pk=event_id, state=EventState.SUPERSEDED)
                .values("task_id", "target_key", "sequence")
                .first()
            )
            if superseded is not None:
                successors = _successors([_chain_marker(**superseded)])
                return DeliveryResult(delivery=None, successor_id=next(iter(successors), None))
        return DeliveryResult(delivery=None, successor_id=None)
    recorded = _round(claims)
    if not recorded.delivery_ids:
        return DeliveryResult(delivery=None, successor_id=None)
    delivery = WebhookDelivery.objects.get(pk=recorded.delivery_ids[0])
    return DeliveryResult(delivery=delivery, successor_id=next(iter(recorded.successor_ids), None))


def _chain_marker(*, task_id: str, target_key: str, sequence: int) -> _Claim:
    # Only the chain fields matter to _successors.
    return _Claim(
        delivery_id=0,
        attempt=0,
        trigger="",
        url="",
        event_id=0,
        msg_id="",
        body="",
        organization_id=0,
        task_id=task_id,
        target_key=target_key,
        sequence=sequence,
        endpoint_id=None,
        endpoint_enabled=None,
        failing_since=None,
        hook_gone=False,
        prev_attempted_at=None,
        prev_url="",
        token="",
    )


def _deliver_rounds(event_ids: Iterable[int], *, time_budget: float, drain: bool) -> list[int]:
    started = time.monotonic()
    # Draining claims every due attempt, the given ones among them.
    wanted = [] if drain else list(dict.fromkeys(int(event_id) for event_id in event_ids))
    following: list[int] = []  # successors: claimed waiting on locks, see _claim_batch
    attempted: list[int] = []
    in_flight = _InFlight()
    # From here on no send begins: one still waiting for a thread is given back unsent, so
    # every send that began ends (its own deadline) and is recorded before Celery's soft limit.
    start_by = started + time_budget
    while True:
        within_budget = time.monotonic() < start_by
        # No more work is claimed while a send of ours still waits for a thread: claiming it
        # would not send it any sooner, only keep it from other workers.
        room = BATCH_SIZE - len(in_flight) if not in_flight.waiting() else 0
        claims: list[_Claim] = []
        if within_budget and room > 0:
            if following:
                batch, following = following[:room], following[room:]
                claims = _claim_batch(clock.now(), event_ids=batch, limit=len(batch), wait=True)
            elif drain:
                # Every due attempt, oldest first: the given messages among them (a message
                # not due or held back could not be claimed by its id either).
                claims = _claim_batch(clock.now(), limit=room)
            elif wanted:
                batch, wanted = wanted[:room], wanted[room:]
                claims = _claim_batch(clock.now(), event_ids=batch, limit=len(batch))
        if not claims and not len(in_flight):
            if within_budget and (following or wanted):
                continue  # these were done or held: on to the next ones
            break
        results = in_flight.start(claims)
        # Draining, the loop looks for newly due work while a slow receiver is still busy.
        results += in_flight.collect(
            at_most=DRAIN_POLL_SECONDS if drain else None, start_by=start_by
        )
        if results:
            recorded = _record_batch(results)
            attempted.extend(recorded.delivery_ids)
            following.extend(recorded.successor_ids)
    return attempted


def events_deliver(
    *, event_ids: Iterable[int], time_budget: float = WORKER_TIME_BUDGET
) -> list[WebhookDelivery]:
    """Deliver these messages and, as each finishes, the next one of its task and target.

    Returns the attempts made, in the order they were made.
    """
    attempted = _deliver_rounds(event_ids, time_budget=time_budget, drain=False)
    by_id = WebhookDelivery.objects.in_bulk(attempted)
    return [by_id[pk] for pk in attempted]


def deliveries_drain(
    *, event_ids: Iterable[int] = (), time_budget: float = WORKER_TIME_BUDGET
) -> int:
    """What a delivery worker runs: every due attempt (``event_ids``' among them), oldest
    first, in batches, until nothing is due or the time budget is spent. Returns the attempts
    made.

    The broker message is a doorbell: under load one worker empties the backlog in batches
    instead of making one round per message, and the messages that arrive meanwhile find
    their attempts done (one statement each).
    """
    return len(_deliver_rounds(event_ids, time_budget=time_budget, drain=True))


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
