"""Writes of the mjproxy engine: the per-account callback token and applying callbacks.

A midjourney-proxy calls ``notifyHook`` with the task JSON on every change of a job. The hook
URL carries the account id and a random per-account token (stored encrypted with the account's
secrets, compared in constant time): the upstream cannot send headers of our choosing, so the
URL is the credential. A callback is a hint, never the authority on money: it is mapped exactly
like a poll answer and applied through the lifecycle's compare-and-set transitions, so a
duplicate, late or replayed callback cannot move a finished task.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q

from apps.core.errors import PermissionDenied
from apps.engines.base import PollResult
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Status
from apps.tasks.lifecycle import (
    ACTIVE_STATUSES,
    task_fail,
    task_poll_now,
    task_record_progress,
)
from apps.tasks.models import Task

from . import mapping
from .engine import CALLBACK_SNAPSHOT_SECONDS, account_secrets, callback_cache_key

logger = logging.getLogger(__name__)

ENGINE = "mjproxy"


class CallbackResult:
    IGNORED = "ignored"  # no such upstream job of this account (or not ours any more)
    UNCHANGED = "unchanged"  # already finished, or nothing new
    PROGRESS = "progress"
    FAILED = "failed"
    FINISHING = "finishing"  # a worker is fetching and storing the result now


def mjproxy_callback_token_ensure(*, account: UpstreamAccount) -> str:
    """The account's callback token, generated once (under a row lock, so exactly once)."""
    token = account_secrets(account).get("callback_token")
    if token:
        return str(token)
    with transaction.atomic():
        locked = UpstreamAccount.objects.select_for_update().get(pk=account.pk)
        stored = account_secrets(locked)
        if not stored.get("callback_token"):
            stored["callback_token"] = secrets.token_urlsafe(32)
            UpstreamAccount.objects.filter(pk=account.pk).update(secrets=stored)
    account.secrets = stored  # type: ignore[assignment]  # the field encrypts the dict
    return str(stored["callback_token"])


def mjproxy_callback_account(*, account_id: int, token: str) -> UpstreamAccount:
    """The mjproxy account the callback URL names, if its token matches. PermissionDenied
    otherwise — the same answer for an unknown account as for a wrong token."""
    account = UpstreamAccount.objects.filter(pk=account_id, engine=ENGINE).first()
    expected = str(account_secrets(account).get("callback_token") or "") if account else ""
    # Compare even when there is nothing to compare with, so timing tells nothing either.
    matches = hmac.compare_digest(
        (expected or secrets.token_urlsafe(32)).encode(), str(token or "").encode()
    )
    if account is None or not expected or not matches:
        raise PermissionDenied("This callback URL is not valid.")
    return account


def mjproxy_callback_apply(*, account: UpstreamAccount, payload: Mapping[str, Any]) -> str:
    """Apply one upstream callback (a task JSON) to our task, if it is one of ours."""
    job_id = str(payload.get("id") or "").strip()
    if not job_id:
        return CallbackResult.IGNORED
    task = (
        Task.objects.filter(upstream_account=account, upstream_job_id=job_id)
        .only("pk", "action", "status")
        .first()
    )
    if task is None:
        return CallbackResult.IGNORED
    if task.status != Status.IN_PROGRESS:
        return CallbackResult.UNCHANGED
    view = mapping.upstream_view(payload, action=task.action)
    if view.status == PollResult.RUNNING:
        moved = task_record_progress(task_id=task.pk, progress=view.progress)
        return CallbackResult.PROGRESS if moved else CallbackResult.UNCHANGED
    if view.status == PollResult.FAILURE:
        failed = task_fail(
            task_id=task.pk,
            reason=view.fail_reason,
            error_code=view.error_code,
            from_statuses=ACTIVE_STATUSES,
            # Still this job's task: one an operator moved to another account meanwhile is
            # running a new job, which this report is not about.
            where=Q(upstream_account=account, upstream_job_id=job_id),
        )
        if not failed:
            return CallbackResult.UNCHANGED
        UpstreamAccount.objects.filter(pk=account.pk).update(total_failed=F("total_failed") + 1)
        return CallbackResult.FAILED
    # SUCCESS: downloading and storing the images is a worker's job, not a web request's. The
    # finished JSON is left where the poll step looks first, and the poll step runs now.
    cache.set(callback_cache_key(account.pk, job_id), dict(payload), CALLBACK_SNAPSHOT_SECONDS)
    if task_poll_now(task_id=task.pk):
        return CallbackResult.FINISHING
    return CallbackResult.UNCHANGED
