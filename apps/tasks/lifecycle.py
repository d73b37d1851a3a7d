"""The task state machine after acceptance: start, progress, success, failure, cancel.

Every status change is a compare-and-set ``UPDATE … WHERE status IN (…)``: zero rows means
another worker (or a cancel, or the sweeper) got there first, and this caller stops. Money is
settled in the same transaction as the terminal transition — capture on SUCCESS, release on
anything else — through the ledger, whose shared settle key makes a second settle a no-op.

Engines are reached only here, with a frozen ``Job`` (``jobs.job_for``); what they return, and
the news they push (``JobUpdate``, via :func:`task_apply_update`), is applied here. Celery
messages leave through ``apps.core.messaging`` by task name, after commit.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.models import Organization
from apps.billing.ledger import ledger_capture, ledger_release
from apps.billing.models import EntryKind
from apps.core.cache import LeanScript
from apps.core.errors import PermissionDenied, ServiceUnavailable
from apps.core.http import Timeout, safe_download
from apps.core.messaging import send_after_commit, send_now
from apps.engines.base import (
    Engine,
    EngineError,
    Job,
    JobUpdate,
    PermanentEngineError,
    PollResult,
    SubmitOutcomeUnknown,
    SubmitResult,
    TemporaryEngineError,
    get_engine,
)
from apps.engines.models import Health, UpstreamAccount
from apps.engines.notify import account_cooling_down
from apps.engines.own_selectors import own_modes_served

from . import rows, storage
from .actions import VIDEO_SECONDS, action_spec, video_extendable
from .buttons import buttons_for, resolve_custom_id
from .enums import TERMINAL_STATUSES, Action, ErrorCode, Pool, Status
from .events import task_changed
from .jobs import account_view, job_for
from .models import SweepMark, Task
from .prompt import parse_prompt, seed

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (Status.SUBMITTED, Status.IN_PROGRESS)
NON_TERMINAL = (Status.MODAL, Status.NOT_START, Status.SUBMITTED, Status.IN_PROGRESS)
#: Temporary engine errors tolerated before a task fails.
MAX_START_ATTEMPTS = 5
#: Consecutive upstream failures that put an account into cooldown.
COOLDOWN_AFTER_FAILURES = 3
COOLDOWN = timedelta(minutes=2)
#: ``engine_state`` key counting submits the sweeper found interrupted by a dead worker.
INTERRUPTED_SUBMITS = "interrupted_submits"
#: When the first submit of the task whose outcome was unknown was given up on (ISO time).
UNKNOWN_SINCE = "unknown_since"
#: Unknown submit outcomes (``SubmitOutcomeUnknown``) a task of an engine that can find its
#: jobs may meet before it fails; the look-ups after them back off from ``TASK_POLL_INTERVAL``
#: to ``MAX_UNKNOWN_OUTCOME_DELAY`` (about four minutes in all at the default interval).
MAX_INTERRUPTED_SUBMITS = 12
MAX_UNKNOWN_OUTCOME_DELAY = 30.0
#: ``engine_state`` key counting consecutive poll steps that crashed (a bug, an answer nobody
#: foresaw, storage refusing the result). Reset by a step that gets a normal answer.
POLL_CRASHES = "poll_crashes"
#: Crashed poll steps in a row after which the task fails (INTERNAL_ERROR, hold released)
#: instead of being retried until its run timeout. Retries back off: about a minute in all.
MAX_POLL_CRASHES = 6
#: Longest wait before a crashed poll step is tried again.
MAX_POLL_CRASH_DELAY = 60.0


def _now() -> datetime:
    return timezone.now()


def _grace() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "TASK_LEASE_GRACE", 30)))


def poll_lease(now: datetime, *, countdown: float = 0) -> datetime:
    """Until when a poll chain is presumed alive: a few poll intervals plus a grace period
    (plus ``countdown``, when the next step is scheduled later than usual).

    Every poll step pushes this forward; the sweeper restarts the chain (with a new token, so
    the old one stops at its next step) only once it has passed.
    """
    return now + timedelta(seconds=settings.TASK_POLL_INTERVAL * 3 + countdown) + _grace()


def submit_lease(now: datetime) -> datetime:
    """Until when a worker that claimed a submit may still be inside ``engine.submit``.

    Longer than the hard Celery time limit, after which the worker process is killed: only
    then may the sweeper conclude the worker died, so a slow but live submit is never doubled.
    """
    return now + timedelta(seconds=int(settings.CELERY_TASK_TIME_LIMIT)) + _grace()


def start_lease(now: datetime) -> datetime:
    """Until when an assigned task may wait for its start message before it is sent again.

    Sending it twice is harmless (``task_start`` claims at most once), so this is short.
    """
    return now + _grace()


#: Celery task names (``apps.tasks.workers``). Sent by name: no import of the entry points.
DISPATCH = "tasks.dispatch"
START_JOB = "tasks.start_job"
POLL_JOB = "tasks.poll_job"
FINISH_JOB = "tasks.finish_job"
DERIVE_FILES = "tasks.derive_files"
#: The derive message's priority on the results queue: after every waiting finishing step
#: (Redis serves 0 first, 9 last), so thumbnails and splits never delay a SUCCESS.
DERIVE_PRIORITY = 9


def kick_dispatcher() -> None:
    """Ask a worker to dispatch queued tasks, once the current transaction commits.

    The dispatcher runs on a worker, never inside the request that accepted a task: it locks
    every account row, which a burst of customer requests must not contend for. Kicks are
    coalesced (:func:`dispatch_request`): a burst of them sends one message, not one each.
    """
    transaction.on_commit(_kick_now)


def _kick_now() -> None:
    if dispatch_request():
        send_now(DISPATCH)


# --- coalescing dispatch passes (Redis flags; a lost flag costs at most one beat interval) ----
#
# Three keys per queue: ``queued`` (a dispatch message is on its way: do not send another),
# ``again`` (a pass is wanted: whoever runs the dispatcher runs one more pass before it stops)
# and ``running`` (a worker is inside the dispatcher). A kick sets ``again`` and sends a
# message only if none is queued; the worker clears ``queued`` when it takes the message, so a
# kick after that sends a new one; a worker that finds another running leaves ``again`` set for
# it, and the running one re-checks ``again`` before and after it lets go of ``running``. So
# no kick is lost and none piles up: at most one pass runs and at most one message waits.

#: Seconds a ``queued`` mark lives: a message lost with the broker stops suppressing kicks
#: after this (beat's dispatch safety net runs meanwhile).
DISPATCH_QUEUED_TTL = 15
#: Seconds a ``running`` mark lives: longer than a pass can take (the hard time limit).
DISPATCH_RUNNING_TTL = 120

_dispatch_client: Any = None


def dispatch_redis() -> Any:
    """The Redis client for the coalescing flags, or None when dispatches are not coalesced
    (no Redis, or ``TASK_DISPATCH_COALESCE`` off): every kick then sends a message."""
    global _dispatch_client
    if not getattr(settings, "TASK_DISPATCH_COALESCE", False) or not settings.REDIS_URL:
        return None
    if _dispatch_client is None:
        timeout = float(getattr(settings, "REDIS_SOCKET_TIMEOUT", 2.0))
        _dispatch_client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return _dispatch_client


def dispatch_keys() -> tuple[str, str, str]:
    """``queued``, ``again`` and ``running``, per Celery queue (so test runs and benchmarks
    sharing one Redis never coalesce into each other)."""
    prefix = f"mjgate:dispatch:{settings.CELERY_TASK_DEFAULT_QUEUE}"
    return f"{prefix}:queued", f"{prefix}:again", f"{prefix}:running"


#: A kick as one Redis command (a script, run by its SHA): KEYS again, queued; ARGV their TTLs.
#: Sets ``again``, and ``queued`` unless it is set; 1 when it set ``queued`` (send a message).
#: A pipeline of the two SETs costs the request about twice the client CPU of one command.
_KICK = """
redis.call('set', KEYS[1], 1, 'EX', tonumber(ARGV[1]))
if redis.call('set', KEYS[2], 1, 'NX', 'EX', tonumber(ARGV[2])) then return 1 end
return 0
"""
_kick = LeanScript(_KICK)


def dispatch_request() -> bool:
    """Note that a dispatch pass is wanted. True when a message must be sent (none is queued,
    or the flags cannot be read: a message too many beats a kick lost)."""
    client = dispatch_redis()
    if client is None:
        return True
    queued, again, _ = dispatch_keys()
    try:
        return bool(
            _kick(client, keys=[again, queued], args=[DISPATCH_RUNNING_TTL, DISPATCH_QUEUED_TTL])
        )
    except redis.RedisError:
        logger.warning("dispatch flags unreadable; sending the message", exc_info=True)
        return True


def enqueue_start(task_id: str, *, countdown: float = 0) -> None:
    """Ask a worker to submit an assigned task, once the current transaction commits."""
    send_after_commit(START_JOB, task_id, countdown=countdown or None)


def enqueue_poll(
    task_id: str, token: str, *, countdown: float | None = None, counted_from: float | None = None
) -> None:
    """``counted_from``: the ``time.monotonic()`` of the upstream's answer the countdown is
    reckoned from (the writes and the commit after it do not delay the poll)."""
    delay = settings.TASK_POLL_INTERVAL if countdown is None else countdown
    send_after_commit(POLL_JOB, task_id, token, countdown=delay, counted_from=counted_from)


def enqueue_finish(task_id: str, token: str) -> None:
    """Ask a worker of the results queue (low priority, ``CELERY_RESULTS_QUEUE``) to make and
    store the result of a job the upstream finished; the account's slot is already free."""
    send_after_commit(FINISH_JOB, task_id, token)


#: Shortest wait before a poll the upstream's estimate says is due (a clock a little off must
#: not turn into a busy loop), and what is added to the estimate so the job is done by then.
#: The poll message leaves after the upstream answered, so it comes due after the estimate
#: even with no slack; the few milliseconds only cover a clock step. Every millisecond added
#: here is a millisecond each slot idles per job (issue 15, P2).
MIN_POLL_DELAY = 0.05
POLL_ETA_SLACK = 0.003


def poll_delay(eta_seconds: float | None) -> float:
    """Seconds until the next poll: when the upstream expects to be done, if that is sooner
    than the usual interval (``TASK_POLL_INTERVAL``), else the usual interval."""
    interval = float(settings.TASK_POLL_INTERVAL)
    if eta_seconds is None:
        return interval
    return max(MIN_POLL_DELAY, min(interval, eta_seconds + POLL_ETA_SLACK))


def finish_lease(now: datetime) -> datetime:
    """Until when a job whose slot was freed may wait for its result to be stored before the
    sweeper sends the finishing message again (the results queue may have a backlog: it is
    the low-priority one, and a second message only costs a look at the row)."""
    return now + timedelta(seconds=float(getattr(settings, "TASK_FINISH_LEASE", 300)))


# --- outages and slow jobs ---------------------------------------------------------------------

SWEEP_MARK = "sweep"


def sweep_gap_threshold() -> timedelta:
    """How long without a sweep is more than normal: three sweep intervals, and at least 90 s
    (beat's schedule and a busy worker make a sweep a little late now and then)."""
    interval = float(getattr(settings, "TASK_SWEEP_INTERVAL", 30))
    return timedelta(seconds=max(3 * interval, 90.0))


def sweeper_recent(now: datetime) -> bool:
    """Whether the sweeper ran lately. A poll step that finds a run deadline passed while it has
    not (an outage: the broker, beat or the workers were down) leaves the verdict to the
    sweeper's next run, which first pushes deadlines by the time lost."""
    last = SweepMark.objects.filter(name=SWEEP_MARK).values_list("at", flat=True).first()
    return last is None or now - last <= sweep_gap_threshold()


class JobBudgetExceeded(Exception):
    """A job's own processing (its poll, making its result) ran past ``TASK_JOB_TIME_BUDGET``:
    the job is slow, not the account, so the account's health is left alone."""


def job_budget_seconds() -> float:
    """The time one poll or finishing step may take: below Celery's soft time limit, so the
    step stops on our terms (a job-level failure) before Celery's (counted as the upstream's)."""
    return float(settings.TASK_JOB_TIME_BUDGET)


@contextmanager
def job_budget() -> Iterator[None]:
    """Raise ``JobBudgetExceeded`` in this step if it runs longer than its budget.

    A timer signal, so only in the main thread (Celery's prefork and solo pools, tests);
    elsewhere Celery's own soft time limit is the bound.
    """
    seconds = job_budget_seconds()
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _over(signum: int, frame: Any) -> None:
        raise JobBudgetExceeded(f"The job's processing took longer than {seconds:g} seconds.")

    previous = signal.signal(signal.SIGALRM, _over)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _settle(task: Task, *, succeeded: bool) -> None:
    """The single place where the task lifecycle touches money. A task its organization's own
    upstream account ran is charged the platform fee (``own_fee``), whatever was held."""
    if succeeded:
        entry = ledger_capture(
            task=task, charge=task.own_fee if task.served_by_own_account else None
        )
        # What was captured, kept on the task in the capture's transaction: what the task shows
        # as charged stays what the ledger took, whatever happens to the account later.
        captured = -entry.delta_held if entry is not None and entry.kind == EntryKind.CAPTURE else 0
        Task.objects.filter(pk=task.pk).update(tokens_captured=captured)
        task.tokens_captured = captured
    else:
        ledger_release(task=task)


def _reload(task_id: str) -> Task:
    return Task.objects.select_related("parent", "upstream_account", "organization").get(pk=task_id)


# --- terminal transitions --------------------------------------------------------------------


def task_fail(
    *,
    task_id: str,
    reason: str,
    error_code: str,
    from_statuses: tuple[str, ...] = NON_TERMINAL,
    status: str = Status.FAILURE,
    where: Q | None = None,
) -> bool:
    """Move a task to FAILURE (or CANCEL) and release its hold. False if it was not ours.

    ``where`` narrows the compare-and-set to what the caller observed (its submit claim, its
    poll token, the deadline it saw pass): a worker whose task an operator moved to another
    account meanwhile must not fail the task's new run with its stale news.
    """
    now = _now()
    with transaction.atomic():
        moved = Task.objects.filter(where or Q(), pk=task_id, status__in=from_statuses).update(
            status=status,
            fail_reason=reason,
            error_code=error_code,
            progress=0,
            finished_at=now,
            lease_expires_at=None,
            poll_token="",
            updated_at=now,
        )
        if not moved:
            return False
        task = _reload(task_id)
        _settle(task, succeeded=False)
        task_changed(
            task=task,
            event_type="task.cancelled" if status == Status.CANCEL else "task.failed",
            locked=True,  # changed above in this transaction, read after
        )
        kick_dispatcher()
    return True


def _has_result(action: str, outcome: PollResult) -> bool:
    """Whether ``outcome`` carries what a finished task of ``action`` shows: prompts for the
    actions whose result is a list of prompts, an image (with its link or bytes) otherwise."""
    try:
        lists_prompts = action_spec(action).lists_prompts
    except KeyError:
        return True  # not ours to judge
    if lists_prompts:
        return True
    image = outcome.image
    return image is not None and (image.data is not None or bool(image.url))


def task_succeed(*, task_id: str, outcome: PollResult, poll_token: str | None = None) -> bool:
    """Store the result image, then move the task to SUCCESS and capture its hold (the
    thumbnails and splits are made after, on a low-priority message or when first asked for).

    False if another worker, a cancel or a timeout finished the task first — or, with
    ``poll_token``, if the poll chain that saw the result is no longer the task's (an operator
    moved the task to another account); the files this call stored are then deleted again, so
    a lost race leaves nothing behind.
    """
    ours = Q(poll_token=poll_token) if poll_token is not None else Q()
    action = (
        Task.objects.filter(ours, pk=task_id, status__in=ACTIVE_STATUSES)
        .values_list("action", flat=True)
        .first()
    )
    if action is None:
        return False  # spare the download and the storage writes
    if not _has_result(action, outcome):
        # "Done" without what the action makes (an attachment without a link, an answer
        # without an image): charging for it would sell nothing.
        raise PermanentEngineError(
            "The upstream reported the job done but gave no result image.",
            error_code=ErrorCode.UPSTREAM_ERROR,
        )
    result: dict[str, Any] = {}
    if outcome.image is not None:
        data = outcome.image.data
        if data is None and outcome.image.url:
            data = safe_download(
                outcome.image.url,
                max_bytes=50 * 1024 * 1024,
                timeout=Timeout(connect=10, read=30, total=60),
            )
        if data is not None:
            try:
                result = storage.store_result(data=data, is_grid=outcome.is_grid, stem=task_id)
            except storage.ResultRefused as exc:
                # Not an image we can keep (damaged, cut off, too many pixels): the upstream's
                # failure, and asking again brings the same bytes.
                raise PermanentEngineError(
                    exc.message, error_code=ErrorCode.UPSTREAM_ERROR
                ) from exc
    if outcome.videos and result:
        try:
            storage.store_videos(result=result, clips=_video_clips(outcome), stem=task_id)
        except BaseException:
            storage.delete_result(result)
            raise
    task = Task.objects.get(pk=task_id)
    job_hash = secrets.token_hex(16)
    buttons = [
        b.as_dict() for b in _buttons(task.action, job_hash, result, outcome, task.params or {})
    ]
    properties = {**(task.properties or {}), **outcome.properties}
    if result:
        properties["jobHash"] = job_hash
    # What the engine keeps about the finished job (its upstream's buttons …), never shown.
    state = {**(task.engine_state or {}), **outcome.state} if outcome.state else F("engine_state")
    now = _now()
    try:
        with transaction.atomic():
            moved = Task.objects.filter(ours, pk=task_id, status__in=ACTIVE_STATUSES).update(
                status=Status.SUCCESS,
                progress=100,
                result=result,
                buttons=buttons,
                properties=properties,
                engine_state=state,
                seed=outcome.seed if outcome.seed is not None else F("seed"),
                description=outcome.description or F("description"),
                finished_at=now,
                lease_expires_at=None,
                poll_token="",
                updated_at=now,
            )
            if moved:
                task = _reload(task_id)
                _settle(task, succeeded=True)
                if task.upstream_account_id:
                    UpstreamAccount.objects.filter(pk=task.upstream_account_id).update(
                        total_succeeded=F("total_succeeded") + 1, consecutive_failures=0
                    )
                task_changed(task=task, event_type="task.succeeded", locked=True)
                if task.slot_freed_at is None:
                    kick_dispatcher()  # otherwise the slot was handed on when it was freed
    except BaseException:
        storage.delete_result(result)
        raise
    if not moved:
        storage.delete_result(result)
        return False
    if storage.served_by_us() and storage.derived_names(result):
        # Thumbnails and splits are made after SUCCESS (whoever asks first makes a missing one).
        send_after_commit(DERIVE_FILES, task_id, priority=DERIVE_PRIORITY)
    return True


def task_derive_files(*, task_id: str) -> None:
    """Make a succeeded task's thumbnails and splits that nobody has asked for yet (the
    results queue's low-priority step after ``task_succeed``)."""
    row = Task.objects.filter(pk=task_id).values_list("result", flat=True).first()
    if row:
        storage.derive_files(row)


def result_file_derive(name: str) -> bool:
    """Make result file ``name`` if it is a derived file of a task's result not made yet (the
    ``/files/`` route's miss). True when it exists now; False for any name that is not one."""
    parts = storage.result_file_parts(name)
    if parts is None:
        return False
    key, stem = parts
    result = Task.objects.filter(pk=stem, result__key=key).values_list("result", flat=True).first()
    if not result or name not in storage.derived_names(result):
        return False
    try:
        storage.derive_files(result, [name])
    except (OSError, ValueError):  # the image itself is gone or unreadable: nothing to serve
        logger.warning("could not make result file %s", name, exc_info=True)
        return False
    return True


def _video_clips(outcome: PollResult) -> list[bytes]:
    """The clips' bytes: the engine's own, or downloaded from its upstream (bounded)."""
    clips = []
    for video in outcome.videos:
        data = video.data
        if data is None and video.url:
            data = safe_download(
                video.url,
                max_bytes=100 * 1024 * 1024,
                timeout=Timeout(connect=10, read=60, total=120),
            )
        if data:
            clips.append(data)
    return clips


def _buttons(
    action: str,
    job_hash: str,
    result: dict[str, Any],
    outcome: PollResult,
    params: Mapping[str, Any],
) -> list[Any]:
    if action == Action.SWAP_FACE:
        return []
    if action == Action.VIDEO:
        if not _video_extendable(params, outcome):
            # Another 4 s would pass Midjourney's limit: an Extend could only fail.
            return []
        # Extend buttons for the clips this batch has (1, 2 or 4).
        clips = len(result.get("videos") or [])
        return [
            button
            for button in buttons_for(action, job_hash=job_hash, is_grid=False)
            if (resolve_custom_id(button.custom_id).index or 0) <= clips
        ]
    if action in (Action.DESCRIBE, Action.SHORTEN):
        return buttons_for(action, job_hash=job_hash, is_grid=False)
    if not result:
        return []
    return buttons_for(action, job_hash=job_hash, is_grid=bool(result.get("is_grid")))


def _video_extendable(params: Mapping[str, Any], outcome: PollResult) -> bool:
    """Whether a finished video can be extended once more: by the length its task recorded,
    else (a task accepted before lengths were recorded) the length its engine reported."""
    seconds = params.get(VIDEO_SECONDS)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        seconds = outcome.properties.get("videoDuration")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return True  # not known: the extend's own submit decides
    return video_extendable(round(seconds))


# --- running ---------------------------------------------------------------------------------


def _note_account_failure(account_id: int | None, message: str) -> None:
    """Count a temporary upstream failure; enough in a row put the account into cooldown.

    An account whose cooldown has expired is usable again before the sweeper marks it healthy,
    so a failure then starts a new cooldown too; the counter is only reset by a success.
    """
    if account_id is None:
        return
    now = _now()
    UpstreamAccount.objects.filter(pk=account_id).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=message[:2000]
    )
    cooled = UpstreamAccount.objects.filter(
        Q(health=Health.HEALTHY) | Q(health=Health.COOLING_DOWN, cooldown_until__lte=now),
        pk=account_id,
        consecutive_failures__gte=COOLDOWN_AFTER_FAILURES,
    ).update(
        health=Health.COOLING_DOWN,
        health_reason=f"{COOLDOWN_AFTER_FAILURES} consecutive failures: {message}"[:500],
        health_changed_at=now,
        cooldown_until=now + COOLDOWN,
    )
    if cooled:
        account_cooling_down(account_id=account_id)  # the operators hear of it (throttled)


#: The failReason of an ``own`` task none of its organization's own upstream accounts serves
#: the mode of any more: failed when the last such account is removed while the task is queued
#: (``services.cancel.own_tasks_fail_unservable``), or when it would be given back to the queue
#: afterwards (:func:`_requeue`). Names ``{mode}``.
OWN_ACCOUNT_GONE_REASON = (
    "None of your organization's own upstream accounts serves {mode} mode any more, and this "
    "task may run only on your own accounts (pool own); it was not charged."
)


def _own_mode_served(task: Task) -> bool:
    """Whether one of the organization's own accounts (enabled or not) still serves the mode
    of ``task``, an ``own`` task, read under the organization's row lock (``FOR NO KEY
    UPDATE``). Removing such an account takes the same lock before it fails the queued
    ``own`` tasks it strands (``apps.engines.own_services``), so a task given back to the queue
    either meets a served mode and is failed by a removal that commits later, or sees the
    removal and is failed here: never left queued for nothing. The first lock of the
    transaction, as the ledger's order asks (organization, then task rows, then the balance).
    """
    Organization.objects.select_for_update(no_key=True).filter(pk=task.organization_id).values_list(
        "pk", flat=True
    ).first()
    return task.mode in own_modes_served(organization_id=task.organization_id)


def _requeue(task: Task, message: str) -> None:
    """Give a task back to the queue after a temporary upstream error.

    Only while it still carries this worker's claim: a task the sweeper or a cancel took over
    meanwhile is theirs. The upstream did not accept the job (that is what a temporary error
    means), so no interrupted submit is remembered either.

    An ``own`` task whose mode none of its organization's own accounts serves any more (taken
    away while the task was assigned) fails instead (ACCOUNT_UNAVAILABLE, hold released):
    nothing could ever take it from the queue. Shared-pool tasks skip that check and its lock.
    """
    now = _now()
    state = {k: v for k, v in (task.engine_state or {}).items() if k != INTERRUPTED_SUBMITS}
    with transaction.atomic():
        if task.pool == Pool.OWN and not _own_mode_served(task):
            if task_fail(
                task_id=task.pk,
                reason=OWN_ACCOUNT_GONE_REASON.format(mode=task.mode),
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
                from_statuses=(Status.SUBMITTED,),
                where=_claim(task),
            ):
                logger.warning(
                    "own task failed instead of requeued: no own account serves its mode",
                    extra={"task_id": task.pk, "mode": task.mode, "reason": message},
                )
            return
        moved = Task.objects.filter(
            pk=task.pk, status=Status.SUBMITTED, submit_claimed_at=task.submit_claimed_at
        ).update(
            status=Status.NOT_START,
            upstream_account=None,
            engine="",
            submit_claimed_at=None,
            lease_expires_at=None,
            engine_state=state,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if moved:
            task_changed(task=_reload(task.pk), event_type="task.updated")
            kick_dispatcher()
    logger.warning("task requeued", extra={"task_id": task.pk, "reason": message})


def _submit_outcome_unknown(engine: Engine, task: Task, exc: SubmitOutcomeUnknown) -> None:
    """The upstream may or may not have the job: look it up later, or give up without charge.

    An engine that can find its jobs says "unknown" while it can still learn the answer (the
    discord engine waits up to two minutes for Discord's acknowledgement), so the look-ups
    back off and have their own bound, ``MAX_INTERRUPTED_SUBMITS``, rather than the start
    attempts' five: together they span those minutes. The start lease covers the wait, so
    the sweeper does not re-send the start before the scheduled look-up is due.
    """
    interrupted = int((task.engine_state or {}).get(INTERRUPTED_SUBMITS, 0)) + 1
    if not engine.idempotent_submit or interrupted >= MAX_INTERRUPTED_SUBMITS:
        task_fail(
            task_id=task.pk,
            reason=exc.message,
            error_code=exc.error_code,
            from_statuses=(Status.SUBMITTED,),
            where=_claim(task),
        )
        return
    now = _now()
    state = dict(task.engine_state or {})
    state[INTERRUPTED_SUBMITS] = interrupted
    if exc.still_working and engine.unknown_outcome_settle_seconds():
        # This attempt sent the job (a look-up says it did not: ``_submit``) and the upstream
        # may still be making it: the look-ups wait for it from this send on.
        state[UNKNOWN_SINCE] = (task.submit_claimed_at or now).isoformat()
    delay = min(
        float(settings.TASK_POLL_INTERVAL) * 2 ** (interrupted - 1), MAX_UNKNOWN_OUTCOME_DELAY
    )
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=task.pk, status=Status.SUBMITTED, submit_claimed_at=task.submit_claimed_at
        ).update(
            submit_claimed_at=None,
            engine_state=state,
            attempts=F("attempts") + 1,
            lease_expires_at=start_lease(now) + timedelta(seconds=delay),
            updated_at=now,
        )
        if moved:
            enqueue_start(task.pk, countdown=delay)


def _claim(task: Task) -> Q:
    """The submit claim this worker holds: its outcome applies only while the claim does."""
    return Q(submit_claimed_at=task.submit_claimed_at)


def _engine_for(task: Task, account: UpstreamAccount) -> Engine | None:
    """The task's engine, or None (logged) if it is no longer installed."""
    name = task.engine or account.engine
    try:
        return get_engine(name)
    except KeyError:
        logger.error("unknown engine", extra={"task_id": task.pk, "engine": name})
        return None


def engine_named(name: str) -> Engine | None:
    """The installed engine called ``name``, or None."""
    try:
        return get_engine(name)
    except KeyError:
        return None


def _submit(engine: Engine, job: Job) -> SubmitResult:
    """Start the upstream job — or find the one an interrupted earlier submit already started.

    The sweeper hands a task back to ``task_start`` after its worker died inside a submit
    (``INTERRUPTED_SUBMITS``) only for engines that can tell whether that submit reached the
    upstream; looking first keeps a job from being submitted twice.
    """
    if job.state.get(INTERRUPTED_SUBMITS):
        try:
            found = engine.find_job(job)
        except (TemporaryEngineError, SubmitOutcomeUnknown) as exc:
            # The look-up could not ask the upstream: whether the interrupted submit reached
            # it is still unknown. As a temporary error the task would go back to the queue as
            # never accepted (maybe to another account) while the first job may run. No job
            # was sent now (``still_working``; a form sent to a job it found moves that job,
            # which the next look-up adopts): the earlier send's wait stands as it was.
            raise SubmitOutcomeUnknown(
                exc.message, error_code=exc.error_code, still_working=False
            ) from exc
        if found is not None:
            return found
        since = job.state.get(UNKNOWN_SINCE)
        settle = engine.unknown_outcome_settle_seconds()
        if since and settle and (_now() - datetime.fromisoformat(since)).total_seconds() < settle:
            # The first submit may still be reaching the upstream, which lists a job only once
            # it has made it: submitting again now could run the task twice. Look again later.
            raise SubmitOutcomeUnknown(
                "The upstream has not listed the job of an unanswered submit yet; "
                "looking again before submitting anew.",
                error_code=ErrorCode.UPSTREAM_ERROR,
                still_working=False,
            )
    return engine.submit(job)


def task_start(*, task_id: str) -> None:
    """Submit an assigned task to its engine — at most once, even if this runs twice.

    The claim (``submit_claimed_at``) is a compare-and-set, so a redelivered or duplicated
    start message does nothing. A task cancelled while the submit was in flight gets its
    upstream job cancelled instead of being recorded as running.
    """
    now = _now()
    if rows.fixed_sql():
        # The claim and the read of what the submit needs, in one statement.
        claimed_task = rows.task_claim_submit(task_id, now=now, lease=submit_lease(now))
        if claimed_task is None:
            return
        task = claimed_task
    else:
        claimed = Task.objects.filter(
            pk=task_id, status=Status.SUBMITTED, submit_claimed_at__isnull=True
        ).update(submit_claimed_at=now, lease_expires_at=submit_lease(now), updated_at=now)
        if not claimed:
            return
        # What the submit needs: the task, its account and its parent (for follow-ups).
        task = Task.objects.select_related("parent", "upstream_account").get(pk=task_id)
    claim = _claim(task)
    account = task.upstream_account
    if account is None:
        task_fail(
            task_id=task_id,
            reason="The upstream account was removed before the task started.",
            error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            from_statuses=(Status.SUBMITTED,),
            where=claim,
        )
        return
    engine = _engine_for(task, account)
    if engine is None:
        task_fail(
            task_id=task_id,
            reason="The task could not be sent to the upstream because of an internal error.",
            error_code=ErrorCode.INTERNAL_ERROR,
            from_statuses=(Status.SUBMITTED,),
            where=claim,
        )
        return
    job = job_for(task, account)
    try:
        submitted = _submit(engine, job)
        answered = time.monotonic()  # the upstream's estimate runs from here
    except TemporaryEngineError as exc:
        _note_account_failure(account.pk, exc.message)
        if task.attempts + 1 >= MAX_START_ATTEMPTS:
            task_fail(
                task_id=task_id,
                reason=exc.message,
                error_code=exc.error_code,
                from_statuses=(Status.SUBMITTED,),
                where=claim,
            )
        else:
            _requeue(task, exc.message)
        return
    except SubmitOutcomeUnknown as exc:
        _note_account_failure(account.pk, exc.message)
        _submit_outcome_unknown(engine, task, exc)
        return
    except PermanentEngineError as exc:
        task_fail(
            task_id=task_id,
            reason=exc.message,
            error_code=exc.error_code,
            from_statuses=(Status.SUBMITTED,),
            where=claim,
        )
        return
    except SoftTimeLimitExceeded:
        # The submit took too long to say: the request may have reached the upstream.
        slow = SubmitOutcomeUnknown("The upstream did not answer the submit in time.")
        _note_account_failure(account.pk, slow.message)
        _submit_outcome_unknown(engine, task, slow)
        return
    except Exception:
        # A bug or an unexpected upstream answer. Failing now (hold released) beats leaving
        # the task to the sweeper, which would have to guess whether the upstream has it.
        logger.exception("engine submit crashed", extra={"task_id": task_id})
        task_fail(
            task_id=task_id,
            reason="The task could not be sent to the upstream because of an internal error.",
            error_code=ErrorCode.INTERNAL_ERROR,
            from_statuses=(Status.SUBMITTED,),
            where=claim,
        )
        return
    token = secrets.token_hex(8)
    now = _now()
    running: dict[str, Any] = {}
    if engine.seed_from_upstream:
        # The seed chosen at acceptance is not the one the upstream will use (unless the prompt
        # fixed it): the upstream is asked for the real one when a client wants it.
        running["seed"] = _prompt_seed(task.prompt_en)
    with transaction.atomic():
        if rows.fixed_sql():
            # The move, the account's counters and the row read back in one statement.
            written = rows.task_mark_running(
                task,
                upstream_job_id=submitted.upstream_job_id,
                engine_state={**(task.engine_state or {}), **submitted.state},
                token=token,
                now=now,
                lease=poll_lease(now),  # the first poll comes within an interval
                account_id=account.pk,
                **running,
            )
            moved = written is not None
            if written is not None:
                fresh, endpoints = written
                task_changed(
                    task=fresh, event_type="task.updated", locked=True, endpoints_none=not endpoints
                )
                enqueue_poll(
                    task_id,
                    token,
                    countdown=poll_delay(submitted.eta_seconds),
                    counted_from=answered,
                )
        else:
            moved = bool(
                Task.objects.filter(
                    pk=task_id, status=Status.SUBMITTED, submit_claimed_at=task.submit_claimed_at
                ).update(
                    status=Status.IN_PROGRESS,
                    upstream_job_id=submitted.upstream_job_id,
                    engine_state={**(task.engine_state or {}), **submitted.state},
                    started_at=now,
                    progress=0,
                    poll_token=token,
                    slot_freed_at=None,
                    lease_expires_at=poll_lease(now),  # the first poll comes within an interval
                    updated_at=now,
                    **running,
                )
            )
            if moved:
                UpstreamAccount.objects.filter(pk=account.pk).update(
                    total_submitted=F("total_submitted") + 1, last_used_at=now
                )
                task_changed(
                    task=Task.objects.get(pk=task_id), event_type="task.updated", locked=True
                )
                enqueue_poll(
                    task_id,
                    token,
                    countdown=poll_delay(submitted.eta_seconds),
                    counted_from=answered,
                )
    if not moved and _job_orphaned(task_id, account.pk):
        # Cancelled, failed or timed out while we were submitting, or moved to another account
        # by an operator: stop the upstream job. (A task the sweeper handed to another worker
        # on the same account is neither: that worker adopts the job, so it must keep running.)
        started = dataclasses.replace(  # the job to stop was never recorded on the task
            job,
            upstream_job_id=submitted.upstream_job_id,
            state={**job.state, **submitted.state},
        )
        try:
            engine.cancel(started)
        except Exception:  # best effort; the task is already settled
            logger.exception("cancel after lost race failed", extra={"task_id": task_id})


def _prompt_seed(prompt: str) -> int | None:
    """The ``--seed`` a prompt fixes, if any."""
    try:
        return seed(parse_prompt(prompt))
    except Exception:  # validated at submit; an old or odd prompt just fixes no seed
        return None


def _job_orphaned(task_id: str, account_id: int) -> bool:
    current = Task.objects.filter(pk=task_id).values("status", "upstream_account_id").first()
    if current is None:
        return True
    return current["status"] in TERMINAL_STATUSES or current["upstream_account_id"] != account_id


class SlotFreed(NamedTuple):
    """A poll step found its job done and freed the account's slot."""

    account_id: int
    #: The result is still to be made and stored: the caller, once it has handed the slot on,
    #: sends ``enqueue_finish`` or makes it itself (``task_finish``). Should it die first, the
    #: finish lease runs out and the sweeper restarts the poll chain, which asks again.
    finish_pending: bool


def task_poll(*, task_id: str, token: str, defer_finish: bool = False) -> SlotFreed | None:
    """One poll step: progress, result or failure. Re-schedules itself while running.

    Whatever the step concludes applies only while ``token`` is still the task's poll chain
    (compare-and-set on it): a step that was already talking to the upstream when an operator
    moved the task to another account, or a newer chain took over, changes nothing.

    A :class:`SlotFreed` when this step found the job done and freed its slot (else None): the
    caller (the poll message's worker, free at this very moment) then fills that slot itself.
    ``defer_finish``: the caller has the result made once it has done so (``finish_pending``);
    otherwise the results queue is asked here.
    """
    if rows.fixed_sql():
        task = rows.task_for_step(task_id)
    else:
        task = Task.objects.select_related("upstream_account", "parent").filter(pk=task_id).first()
    if task is None or task.status != Status.IN_PROGRESS or task.poll_token != token:
        return None  # finished, cancelled, or superseded by a newer poll chain
    now = _now()
    finishing = task.slot_freed_at is not None
    overdue = bool(task.run_deadline and now >= task.run_deadline and not finishing)
    # Unless the sweeper has not run for a while: an outage ate this task's time, and the
    # sweeper's next run pushes its deadline by the gap; until then it runs on.
    if overdue and sweeper_recent(now):
        task_timeout(task=task, due=now)
        return None
    ours = Q(poll_token=token)
    account = task.upstream_account
    if account is None:
        task_fail(
            task_id=task_id,
            reason="The upstream account running this task was removed.",
            error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            from_statuses=(Status.IN_PROGRESS,),
            where=ours,
        )
        return None
    engine = _engine_for(task, account)
    if engine is None:
        task_fail(
            task_id=task_id,
            reason="The upstream running this task can no longer be reached (internal error).",
            error_code=ErrorCode.INTERNAL_ERROR,
            from_statuses=(Status.IN_PROGRESS,),
            where=ours,
        )
        return None
    job = job_for(task, account)
    try:
        with job_budget():
            outcome = engine.poll_status(job)
        if outcome.status == PollResult.SUCCESS:
            # The upstream is done: its slot is free from now on, whatever storing takes.
            freed = not finishing and _slot_release(task_id, token)
            if not finishing and not freed:
                return None  # finished, cancelled or superseded meanwhile
            if outcome.result_pending:
                if freed and defer_finish:
                    # The caller hands the slot on first, then has the result made.
                    return SlotFreed(account.pk, finish_pending=True)
                enqueue_finish(task_id, token)  # made and stored on the results queue
            else:
                task_succeed(task_id=task_id, outcome=outcome, poll_token=token)
            return SlotFreed(account.pk, finish_pending=False) if freed else None
    except (TemporaryEngineError, SubmitOutcomeUnknown) as exc:
        # A poll changes nothing upstream: an unanswered one is simply asked again.
        _note_account_failure(account.pk, exc.message)
        _keep_polling(task, token, progress=None)
        return None
    except PermanentEngineError as exc:
        task_fail(
            task_id=task_id,
            reason=exc.message,
            error_code=exc.error_code,
            from_statuses=(Status.IN_PROGRESS,),
            where=ours,
        )
        return None
    except SoftTimeLimitExceeded:
        # A slow upstream or a slow download: ask again, like an unanswered poll.
        _note_account_failure(account.pk, "The upstream did not answer a poll in time.")
        _keep_polling(task, token, progress=None)
        return None
    except JobBudgetExceeded:
        # This job is slow to process, not the account: retried a few times with a back-off
        # like a crash, then failed on its own; the account's health is not touched.
        logger.warning("poll step over its time budget", extra={"task_id": task_id})
        _poll_crashed(task, token, engine=engine, job=job)
        return None
    except Exception:
        logger.exception("poll step crashed", extra={"task_id": task_id})
        _poll_crashed(task, token, engine=engine, job=job)
        return None
    if outcome.status == PollResult.FAILURE:
        if task_fail(
            task_id=task_id,
            reason=outcome.fail_reason or "The upstream reported a failure.",
            error_code=outcome.error_code or ErrorCode.UPSTREAM_ERROR,
            from_statuses=(Status.IN_PROGRESS,),
            where=ours,
        ):
            UpstreamAccount.objects.filter(pk=account.pk).update(total_failed=F("total_failed") + 1)
    else:
        state = dict(outcome.state)
        if (task.engine_state or {}).get(POLL_CRASHES):
            state[POLL_CRASHES] = 0  # the upstream answered normally: the run of crashes ended
        _keep_polling(
            task,
            token,
            progress=outcome.progress,
            state=state,
            soon=poll_delay(outcome.eta_seconds),
        )
    return None


def _slot_release(task_id: str, token: str) -> bool:
    """The upstream finished ``task_id``'s job: free its account slot now (the dispatcher
    counts only tasks holding one) and start the next queued task at once, before the result
    is fetched and stored. False if the task is not this poll chain's any more."""
    now = _now()
    if rows.fixed_sql():
        # One statement: its own transaction (no BEGIN and COMMIT around it).
        moved = rows.task_release_slot(task_id, token, now=now, lease=finish_lease(now))
    else:
        with transaction.atomic():
            moved = bool(
                Task.objects.filter(
                    pk=task_id,
                    status=Status.IN_PROGRESS,
                    poll_token=token,
                    slot_freed_at__isnull=True,
                ).update(slot_freed_at=now, lease_expires_at=finish_lease(now), updated_at=now)
            )
    # No dispatch note here: the worker that ran this step runs the dispatcher next
    # (``scheduling.poll_step``), and a pass already running that holds this account is told
    # to pass once more when that worker finds it there.
    return bool(moved)


def task_finish(*, task_id: str, token: str) -> None:
    """Make and store the result of a job the upstream finished (its slot is already free):
    the results queue's step. Applies only while ``token`` is still the task's poll chain."""
    task = Task.objects.select_related("upstream_account", "parent").filter(pk=task_id).first()
    if task is None or task.status != Status.IN_PROGRESS or task.poll_token != token:
        return  # finished (a duplicate message), cancelled, or superseded
    account = task.upstream_account
    engine = _engine_for(task, account) if account is not None else None
    if account is None or engine is None:
        # Let the poll step say what is wrong (it fails the task with the right reason).
        _keep_polling(task, token, progress=None, countdown=0)
        return
    job = job_for(task, account)
    try:
        with job_budget():
            outcome = engine.poll(job)
            if outcome.status == PollResult.SUCCESS:
                task_succeed(task_id=task_id, outcome=outcome, poll_token=token)
                return
    except PermanentEngineError as exc:
        # The result cannot be had (refused as an image, gone upstream): as in the poll step.
        task_fail(
            task_id=task_id,
            reason=exc.message,
            error_code=exc.error_code,
            from_statuses=(Status.IN_PROGRESS,),
            where=Q(poll_token=token),
        )
        return
    except JobBudgetExceeded:
        # Making this result is slow (this job's business, never the account's): retried a
        # few times with a back-off, then the task fails with its hold released.
        logger.warning("finishing a task went over its time budget", extra={"task_id": task_id})
        _poll_crashed(task, token, engine=engine, job=job)
        return
    except Exception:
        logger.exception("finishing a task crashed", extra={"task_id": task_id})
        _poll_crashed(task, token, engine=engine, job=job)
        return
    # The upstream takes it back (it should not): the poll step decides, as for any answer.
    _keep_polling(task, token, progress=None, countdown=0)


def _poll_crashed(task: Task, token: str, *, engine: Engine, job: Job) -> None:
    """A poll step failed in a way nobody foresaw. Retry with a growing delay, a few times.

    Without a bound the sweeper would restart such a chain after every lease until the run
    timeout, while the customer's tokens stay held; a step that crashes the same way
    ``MAX_POLL_CRASHES`` times in a row will not stop doing so, so the task fails, its hold is
    released and the upstream job is asked to stop.
    """
    crashes = int((task.engine_state or {}).get(POLL_CRASHES, 0)) + 1
    if crashes >= MAX_POLL_CRASHES:
        failed = task_fail(
            task_id=task.pk,
            reason="The task's result could not be processed because of an internal error.",
            error_code=ErrorCode.INTERNAL_ERROR,
            from_statuses=(Status.IN_PROGRESS,),
            where=Q(poll_token=token),
        )
        if failed:
            try:
                engine.cancel(job)
            except Exception:  # best effort; the task is already failed and released
                logger.exception(
                    "engine cancel after poll crashes failed", extra={"task_id": task.pk}
                )
        return
    delay = min(float(settings.TASK_POLL_INTERVAL) * 2 ** (crashes - 1), MAX_POLL_CRASH_DELAY)
    _keep_polling(task, token, progress=None, state={POLL_CRASHES: crashes}, countdown=delay)


def _keep_polling(
    task: Task,
    token: str,
    *,
    progress: int | None,
    state: dict[str, Any] | None = None,
    countdown: float | None = None,
    soon: float | None = None,
) -> None:
    """Record progress and schedule the next step — only while this chain is the current one.

    ``countdown``: a delay longer than usual (a crash's back-off), which the lease covers too;
    ``soon``: one no longer than the usual interval (when the upstream expects to be done),
    which the usual lease covers already."""
    now = _now()
    with transaction.atomic():
        fields: dict[str, Any] = {
            "lease_expires_at": poll_lease(now, countdown=countdown or 0),
            "updated_at": now,
        }
        if state:
            fields["engine_state"] = {**(task.engine_state or {}), **state}
        ours = Task.objects.filter(pk=task.pk, status=Status.IN_PROGRESS, poll_token=token).update(
            **fields
        )
        if not ours:
            return  # finished, cancelled, or superseded by the sweeper's new chain
        if progress is not None:
            # Progress only moves forward: an upstream that reports 40 % after 60 % is ignored.
            progressed = Task.objects.filter(
                pk=task.pk, status=Status.IN_PROGRESS, poll_token=token, progress__lt=progress
            ).update(progress=progress)
            if progressed:
                task_changed(task=_reload(task.pk), event_type="task.updated", locked=True)
        enqueue_poll(task.pk, token, countdown=countdown if soon is None else soon)


def task_timeout(*, task: Task, due: datetime | None = None) -> bool:
    """Fail a task past its run deadline (errorCode TIMEOUT), release its hold, stop the job.

    ``due`` is when the caller saw the deadline pass: the task fails only if its deadline is
    still that old, so one an operator moved to another account meanwhile (with a fresh run
    deadline) keeps running.
    """
    if task.upstream_account is not None:
        seconds = task.upstream_account.run_timeout_seconds
    else:
        seconds = int(settings.TASK_DEFAULT_RUN_TIMEOUT.total_seconds())
    failed = task_fail(
        task_id=task.pk,
        reason=f"The task did not finish within its run timeout of {seconds} seconds.",
        error_code=ErrorCode.TIMEOUT,
        from_statuses=ACTIVE_STATUSES,
        where=Q(run_deadline__lte=due) if due is not None else None,
    )
    if failed and task.upstream_account is not None:
        try:
            get_engine(task.engine or task.upstream_account.engine).cancel(
                job_for(task, task.upstream_account)
            )
        except Exception:  # best effort; the task is already failed and released
            logger.exception("engine cancel after timeout failed", extra={"task_id": task.pk})
    return failed


def task_cancel_upstream(*, task: Task) -> None:
    """Best effort: stop the job ``task`` started upstream, if it started one.

    ``task`` as the caller saw it before it settled the task (its account and job id). Never
    raises: the task's status and money are already settled, whatever the upstream says.
    """
    account = task.upstream_account
    if account is None or not task.upstream_job_id:
        return
    try:
        get_engine(task.engine or account.engine).cancel(job_for(task, account))
    except Exception:  # best effort; the customer is not charged either way
        logger.exception("upstream cancel failed", extra={"task_id": task.pk})


#: ``engine_state`` key caching the seed an upstream reported for a finished task.
UPSTREAM_SEED = "upstream_seed"


def task_upstream_seed(*, task: Task) -> int | None:
    """The seed of ``task``'s image, asked from its upstream once and kept on the task.

    Before the job has started upstream only a seed the prompt fixed is known
    (``prompt.known_seed``: the one drawn at acceptance is replaced by an engine whose upstream
    picks the seed). For those engines the upstream is asked once, when a client first wants
    it for a finished task; until then the seed is unknown (None) unless the prompt fixed it.
    Other engines (the sandbox) render with the task's own seed, known once the job starts.
    Raises ``ServiceUnavailable`` when the upstream cannot be asked now.
    """
    state = task.engine_state or {}
    if task.started_at is None:
        return task.seed_known
    if task.seed is not None or UPSTREAM_SEED in state or not task.engine:
        return task.seed
    engine = engine_named(task.engine)
    if engine is None:
        return None
    account = task.upstream_account
    if not engine.seed_from_upstream or task.status != Status.SUCCESS or account is None:
        return None
    try:
        found = engine.image_seed(job_for(task, account))
    except EngineError as exc:
        raise ServiceUnavailable(
            "The upstream could not be asked for this task's seed now; try again shortly.",
            code="upstream_unavailable",
        ) from exc
    # A finished task's other fields never change again; only this cache is written, once.
    with transaction.atomic():
        current = (
            Task.objects.select_for_update()
            .filter(pk=task.pk)
            .values_list("engine_state", flat=True)
            .first()
        )
        Task.objects.filter(pk=task.pk, seed__isnull=True).update(
            seed=found, engine_state={**(current or {}), UPSTREAM_SEED: found}
        )
    return found


def task_is_terminal(task_id: str) -> bool:
    return Task.objects.filter(pk=task_id, status__in=TERMINAL_STATUSES).exists()


# --- out-of-band reports (upstream callbacks) ------------------------------------------------


def task_record_progress(*, task_id: str, progress: int) -> bool:
    """Record progress an upstream pushed to us (a callback) rather than one we polled.

    The same compare-and-set as a poll step: only while IN_PROGRESS, only forwards, never 100
    (that is SUCCESS's). False if nothing changed — a late or duplicate report.
    """
    progress = max(0, min(int(progress), 99))
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, progress__lt=progress
        ).update(progress=progress, updated_at=_now())
        if moved:
            task_changed(task=_reload(task_id), event_type="task.updated")
    return bool(moved)


def task_poll_now(*, task_id: str) -> bool:
    """Run the next poll step at once (an upstream callback says the job has finished).

    A fresh token supersedes the running chain — the step already scheduled stops when it
    finds the token changed — so exactly one chain continues and the result is applied by the
    normal poll path (download, storage, settlement) on a worker. False if not running, or if
    a poll step has seen the job done already (its slot freed): that step is finishing the task
    (download, storage), and a new chain would make it throw its stored result away and start
    over; its finish lease and the sweeper cover a step that dies.
    """
    current = (
        Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS, slot_freed_at__isnull=True)
        .values_list("poll_token", flat=True)
        .first()
    )
    if current is None:
        return False
    token = secrets.token_hex(8)
    now = _now()
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, poll_token=current, slot_freed_at__isnull=True
        ).update(poll_token=token, lease_expires_at=poll_lease(now), updated_at=now)
        if moved:
            enqueue_poll(task_id, token, countdown=0)
    return bool(moved)


# --- pushed news (upstream callbacks, gateway events) ----------------------------------------


class UpdateOutcome:
    """What :func:`task_apply_update` did with one ``JobUpdate``."""

    IGNORED = "ignored"  # no such job of this account (or not ours any more)
    UNCHANGED = "unchanged"  # already finished, or nothing new
    PROGRESS = "progress"
    FAILED = "failed"
    FINISHING = "finishing"  # a worker is fetching and storing the result now


def _updated_task(update: JobUpdate) -> Task | None:
    tasks = Task.objects.filter(upstream_account_id=update.account_id).only(
        "pk", "status", "upstream_job_id"
    )
    if update.task_id:
        return tasks.filter(pk=update.task_id).first()
    if not update.upstream_job_id:
        return None
    return tasks.filter(upstream_job_id=update.upstream_job_id).first()


def task_apply_update(*, update: JobUpdate) -> str:
    """Apply news an engine received about one of its jobs (see ``JobUpdate``).

    Progress moves forward only, a failure fails the task (hold released) — both only while the
    task still runs this job on this account; a success runs the task's poll step now, on a
    worker, which fetches and stores the result. Returns an ``UpdateOutcome``.
    """
    task = _updated_task(update)
    if task is None:
        return UpdateOutcome.IGNORED
    if task.status != Status.IN_PROGRESS:
        return UpdateOutcome.UNCHANGED
    result = update.result
    if result.status == PollResult.RUNNING:
        moved = task_record_progress(task_id=task.pk, progress=result.progress)
        return UpdateOutcome.PROGRESS if moved else UpdateOutcome.UNCHANGED
    if result.status == PollResult.FAILURE:
        failed = task_fail(
            task_id=task.pk,
            reason=result.fail_reason or "The upstream reported a failure.",
            error_code=result.error_code or ErrorCode.UPSTREAM_ERROR,
            from_statuses=ACTIVE_STATUSES,
            # Still this job's task: one an operator moved to another account meanwhile is
            # running a new job, which this report is not about. The job the news names when
            # it names one (a task found by its id may run another job of it by now, say after
            # a move away and back), else the job the task was found running.
            where=Q(
                upstream_account_id=update.account_id,
                upstream_job_id=update.upstream_job_id or task.upstream_job_id,
            ),
        )
        if not failed:
            return UpdateOutcome.UNCHANGED
        UpstreamAccount.objects.filter(pk=update.account_id).update(
            total_failed=F("total_failed") + 1
        )
        return UpdateOutcome.FAILED
    if task_poll_now(task_id=task.pk):
        return UpdateOutcome.FINISHING
    return UpdateOutcome.UNCHANGED


def upstream_callback_receive(
    *, engine_name: str, account_id: int, token: str, payload: Mapping[str, Any]
) -> str:
    """An upstream called us back: authenticate it as ``account_id``'s, let its engine parse
    it, apply what it says. ``PermissionDenied`` — the same for an unknown engine or account
    as for a wrong token — when the URL is not one we gave out. Returns the last
    ``UpdateOutcome`` (``ignored`` when the callback carried nothing we know)."""
    engine = engine_named(engine_name)
    account = UpstreamAccount.objects.filter(pk=account_id, engine=engine_name).first()
    if engine is None or account is None:
        # Spend the time a token comparison takes, so timing does not tell which was wrong.
        hmac.compare_digest(secrets.token_urlsafe(32).encode(), str(token or "").encode())
        raise PermissionDenied("This callback URL is not valid.")
    view = account_view(account)
    if not engine.callback_authentic(view, token):
        raise PermissionDenied("This callback URL is not valid.")
    outcome = UpdateOutcome.IGNORED
    for update in engine.parse_callback(view, payload):
        if update.account_id != account.pk:
            continue  # an engine reports only on the account that called
        outcome = task_apply_update(update=update)
    return outcome
