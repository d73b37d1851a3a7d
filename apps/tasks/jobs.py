"""The engine boundary, tasks side: a task and its account as the frozen value an engine gets.

Engines never see a ``Task`` or an ``UpstreamAccount`` row: :func:`job_for` copies what they may
know into a ``Job`` (files as names read on demand through :func:`apps.tasks.storage.read_file`,
the account's running jobs as a query run on demand), so an engine cannot write a task row even
by accident, and cannot import the task app to try.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from apps.engines.base import AccountView, Job, ParentRef, StoredFile
from apps.engines.models import UpstreamAccount

from .enums import Status
from .models import Task
from .storage import read_file, read_result_file

#: The running jobs an engine may look up in one go for an account, at most.
MAX_RUNNING_JOBS = 1000


def _frozen(values: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy: an engine that tries to change the job's data gets a TypeError."""
    return MappingProxyType(dict(values or {}))


def _file(name: str) -> StoredFile:
    return StoredFile(name=name, reader=read_file)


def _result_file(name: str, result: Mapping[str, Any]) -> StoredFile:
    """A file of a parent's result: a split not made yet is made when the engine reads it."""
    copy = dict(result)
    return StoredFile(name=name, reader=lambda wanted: read_result_file(wanted, copy))


def _running_jobs(account_id: int) -> Sequence[str]:
    return tuple(
        Task.objects.filter(upstream_account_id=account_id, status=Status.IN_PROGRESS)
        .exclude(upstream_job_id="")
        .order_by("started_at")
        .values_list("upstream_job_id", flat=True)[:MAX_RUNNING_JOBS]
    )


def account_view(account: UpstreamAccount) -> AccountView:
    """What an engine may know about ``account`` (its credentials decrypted)."""
    account_id = account.pk
    return AccountView(
        id=account_id,
        engine=account.engine,
        name=account.name,
        modes=tuple(account.modes or ()),
        options=_frozen(account.options),
        # The field decrypts to a dict; its static type is its database column's (text).
        secrets=_frozen(cast("dict[str, Any]", account.secrets)),
        running_jobs=lambda: _running_jobs(account_id),
        operator_managed=account.owner_id is None,
    )


def _parent_ref(parent: Task) -> ParentRef:
    result = parent.result or {}
    return ParentRef(
        task_id=parent.pk,
        action=parent.action,
        prompt=parent.prompt_en,
        upstream_job_id=parent.upstream_job_id,
        state=_frozen(parent.engine_state),
        params=_frozen(parent.params),
        seed=parent.seed,
        engine=parent.engine,
        account_id=parent.upstream_account_id,
        buttons=tuple(_frozen(b) for b in parent.buttons or [] if isinstance(b, dict)),
        grid=_file(result["image"]) if result.get("image") else None,
        splits=tuple(_result_file(name, result) for name in result.get("splits") or []),
        videos=tuple(_file(name) for name in result.get("videos") or []),
    )


def job_for(task: Task, account: UpstreamAccount) -> Job:
    """``task`` as the engine running it on ``account`` sees it."""
    params = _frozen(task.params)
    mask = params.get("mask")
    return Job(
        task_id=task.pk,
        action=task.action,
        mode=task.mode,
        prompt=task.prompt_en,
        params=params,
        account=account_view(account),
        custom_id=task.custom_id,
        seed=task.seed,
        images=tuple(_file(name) for name in task.inputs or []),
        mask=_file(mask) if isinstance(mask, str) and mask else None,
        parent=_parent_ref(task.parent) if task.parent_id is not None and task.parent else None,
        upstream_job_id=task.upstream_job_id,
        state=_frozen(task.engine_state),
        progress=task.progress,
        references={
            kind: tuple(_file(name) for name in names)
            for kind, names in (params.get("references") or {}).items()
        },
    )
