"""An organization's own upstream accounts: add, change, switch off, remove (issue #18).

The tenant-facing twin of the operator's ``apps.engines.services``: the same validation
(``upstream_account_clean``: the engine's ``validate_options``, credentials kept apart and
encrypted), plus what a customer must not be able to do —

* add accounts beyond its plan (``MembershipTier.max_own_accounts``, counted under the
  organization's row lock, so two requests at once cannot both take the last one);
* add a sandbox account (the platform's) or point an account at a private or loopback
  address (the address is customer input; every call to it runs the full SSRF guard too,
  and a discord account's gateway is always Discord's own);
* read or change another organization's account, or a shared one (``NotFound``);
* remove an account while it still runs jobs (they would lose their account).

Removing the organization's last own account that serves a mode — deleting it, or changing
its modes (here or in the operator's admin, ``own_account_update_by_operator``) — fails the
organization's queued ``own`` tasks of that mode in the same transaction (errorCode
ACCOUNT_UNAVAILABLE, their holds released): nothing else may run them. Every such change locks
the organization's row first — the lock a submit takes to accept a task, and the first lock of
the ledger's order — so an ``own`` task accepted before the change is failed by it, and one
accepted after it is refused (``acceptance._check_own_served``). A switched-off account is not
gone: its queued tasks wait for it to be switched on again, up to their start deadline.
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from apps.core.http import UnsafeURL, check_url
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.tasks.services.cancel import own_tasks_fail_unservable

from .base import engine_names
from .models import UpstreamAccount
from .own_selectors import own_account_get, own_modes_served
from .services import (
    secrets_keep_generated,
    upstream_account_clean,
    upstream_account_set_enabled,
    upstream_account_update,
)

#: Engines an organization may bring its own accounts of (the sandbox is the platform's).
OWN_ACCOUNT_ENGINES = ("mjproxy", "discord")
#: A tenant's account runs at most this many jobs at once, and holds at most this many waiting.
OWN_ACCOUNT_MAX_CONCURRENCY = 20
OWN_ACCOUNT_MAX_QUEUE = 50


def own_account_engines() -> list[str]:
    """The engines an organization may add an account of, on this installation."""
    installed = set(engine_names())
    return [name for name in OWN_ACCOUNT_ENGINES if name in installed]


def _check_allowed(organization: Organization) -> int:
    tier = organization.tier
    if not tier.allows_own_accounts:
        raise PermissionDenied(
            f"The {tier.name} plan does not include your own upstream accounts; upgrade your "
            "plan to add them.",
            code="own_accounts_not_allowed",
            details={"tier": tier.code},
        )
    return int(tier.max_own_accounts)


#: URL options an own account may not set, per engine, and why (what it uses instead).
_FIXED_ADDRESSES = {
    ("discord", "gateway_url"): (
        "your own Discord account always connects to Discord's gateway; leave it out."
    ),
}


def _check_addresses(engine: str, options: dict[str, Any]) -> None:
    """Addresses in the options are customer input: no private, loopback or link-local
    host (what the URL itself says; every request re-checks the resolved addresses through
    the SSRF guard). A discord account's gateway is Discord's own: not an option here."""
    for key, value in options.items():
        if not key.endswith("url") or value in (None, ""):
            continue
        fixed = _FIXED_ADDRESSES.get((engine, key))
        if fixed is not None:
            raise ValidationFailed(f"{key}: {fixed}", details={"field": f"options.{key}"})
        try:
            check_url(str(value), allow_private=False, resolve_host=False)
        except UnsafeURL as exc:
            raise ValidationFailed(
                f"{key}: {exc.message}", details={"field": f"options.{key}"}
            ) from exc


def _check_limits(concurrency: int, queue_size: int) -> None:
    if not 1 <= concurrency <= OWN_ACCOUNT_MAX_CONCURRENCY:
        raise ValidationFailed(
            f"concurrency must be between 1 and {OWN_ACCOUNT_MAX_CONCURRENCY}.",
            details={"field": "concurrency"},
        )
    if not 0 <= queue_size <= OWN_ACCOUNT_MAX_QUEUE:
        raise ValidationFailed(
            f"queue size must be between 0 and {OWN_ACCOUNT_MAX_QUEUE}.",
            details={"field": "queue_size"},
        )


def _lock_organization(organization_id: int) -> None:
    """The organization's row, ``FOR NO KEY UPDATE``: the lock every submit of it takes to
    accept a task, so none is accepted while an own account's modes change; taken first, as
    the ledger's lock order asks (a failed task's release then locks the balance row)."""
    Organization.objects.select_for_update(no_key=True).filter(pk=organization_id).values_list(
        "pk", flat=True
    ).first()


def _fail_stranded(*, organization_id: int, modes: set[str]) -> list[str]:
    """After ``modes`` left one of the organization's own accounts (in this transaction, under
    the organization's lock): fail its queued ``own`` tasks of those of them no own account
    serves now, enabled or not. The ids failed."""
    gone = modes - own_modes_served(organization_id=organization_id)
    if not gone:
        return []
    return own_tasks_fail_unservable(organization_id=organization_id, modes=gone)


def own_account_create(
    *,
    organization: Organization,
    engine: str,
    name: str,
    modes: list[str],
    concurrency: int = 3,
    queue_size: int = 10,
    options: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> UpstreamAccount:
    """Add an own account. It serves only this organization's ``own`` and
    ``own_then_shared`` tasks from the moment it exists."""
    limit = _check_allowed(organization)
    if engine not in own_account_engines():
        raise ValidationFailed(
            f"Unknown engine '{engine}'. Your own accounts may be: "
            f"{', '.join(own_account_engines())}.",
            details={"field": "engine"},
        )
    _check_limits(concurrency, queue_size)
    clean = upstream_account_clean(
        engine=engine,
        name=name,
        modes=modes,
        concurrency=concurrency,
        queue_size=queue_size,
        run_timeout_seconds=int(settings.TASK_DEFAULT_RUN_TIMEOUT.total_seconds()),
        options=options,
        secrets=secrets,
    )
    _check_addresses(clean.engine, clean.options)
    try:
        with transaction.atomic():
            # The row lock serialises this organization's additions: the count is exact.
            Organization.objects.select_for_update(no_key=True).filter(pk=organization.pk).get()
            count = UpstreamAccount.objects.filter(owner=organization).count()
            if count >= limit:
                raise Conflict(
                    f"Your {organization.tier.name} plan allows {limit} upstream accounts of "
                    f"your own; remove one first.",
                    code="own_account_limit",
                    details={"limit": limit, "count": count},
                )
            account = UpstreamAccount.objects.create(
                owner=organization,
                name=clean.name,
                engine=clean.engine,
                modes=clean.modes,
                concurrency=clean.concurrency,
                queue_size=clean.queue_size,
                run_timeout_seconds=clean.run_timeout_seconds,
                options=clean.options,
                secrets=clean.secrets,  # type: ignore[misc]  # encrypted by the field
            )
    except IntegrityError as exc:
        raise Conflict(
            f"Your organization already has an upstream account named '{clean.name}'.",
            details={"field": "name"},
        ) from exc
    return account


def own_account_update(
    *,
    organization: Organization,
    account_id: object,
    name: str | None = None,
    modes: list[str] | None = None,
    concurrency: int | None = None,
    queue_size: int | None = None,
    options: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> UpstreamAccount:
    """Change an own account; what is not given stays. ``options`` replaces the plain
    options; ``secrets`` replaces the stored credentials (None keeps them; the generated
    callback token stays unless ``{}`` clears them all). The engine never
    changes. Allowed on a plan that no longer includes own accounts too (to fix or wind
    down what exists). Taking away the last own account's mode fails the organization's
    queued ``own`` tasks of that mode (see the module's docstring)."""
    account = own_account_get(organization=organization, account_id=account_id)
    new_concurrency = account.concurrency if concurrency is None else concurrency
    new_queue = account.queue_size if queue_size is None else queue_size
    _check_limits(new_concurrency, new_queue)
    stored_secrets = cast(dict[str, Any], account.secrets) or {}
    clean = upstream_account_clean(
        engine=account.engine,
        name=account.name if name is None else name,
        modes=list(account.modes or []) if modes is None else modes,
        concurrency=new_concurrency,
        queue_size=new_queue,
        run_timeout_seconds=account.run_timeout_seconds,
        options=dict(account.options or {}) if options is None else options,
        secrets=dict(stored_secrets) if secrets is None else secrets,
    )
    _check_addresses(clean.engine, clean.options)
    try:
        with transaction.atomic():
            _lock_organization(organization.pk)
            # Locked: the generated callback token is written under this lock too
            # (``mjproxy_callback_token_ensure``), so one made meanwhile is carried over.
            current = (
                UpstreamAccount.objects.select_for_update(no_key=True)
                .filter(pk=account.pk, owner=organization)
                .first()
            )
            if current is None:
                raise NotFound("No such upstream account.")
            removed = set(current.modes or []) - set(clean.modes)
            UpstreamAccount.objects.filter(pk=account.pk, owner=organization).update(
                name=clean.name,
                modes=clean.modes,
                concurrency=clean.concurrency,
                queue_size=clean.queue_size,
                options=clean.options,
                secrets=secrets_keep_generated(
                    stored=cast(dict[str, Any], current.secrets) or {},
                    new=clean.secrets,
                    given=secrets,
                ),
                updated_at=timezone.now(),
            )
            _fail_stranded(organization_id=organization.pk, modes=removed)
    except IntegrityError as exc:
        raise Conflict(
            f"Your organization already has an upstream account named '{clean.name}'.",
            details={"field": "name"},
        ) from exc
    return own_account_get(organization=organization, account_id=account.pk)


def own_account_update_by_operator(
    *,
    account: UpstreamAccount,
    name: str,
    modes: list[str],
    concurrency: int,
    queue_size: int,
    run_timeout_seconds: int,
    options: dict[str, Any],
    secrets: dict[str, Any] | None = None,
) -> tuple[UpstreamAccount, list[str]]:
    """The operator's admin changing an organization's own account: the operator's rules
    (``upstream_account_update``: no tenant limits), and what ``own_account_update`` does
    about the modes it takes away, in one transaction. Returns the account and the ids of
    the queued ``own`` tasks failed for want of an account serving their mode."""
    organization_id = account.owner_id
    if organization_id is None:
        raise ValidationFailed("Not an organization's own upstream account.")
    with transaction.atomic():
        _lock_organization(organization_id)
        before = (
            UpstreamAccount.objects.filter(pk=account.pk, owner_id=organization_id)
            .values_list("modes", flat=True)
            .first()
        )
        if before is None:
            raise NotFound("No such upstream account.")
        updated = upstream_account_update(
            account=account,
            name=name,
            modes=modes,
            concurrency=concurrency,
            queue_size=queue_size,
            run_timeout_seconds=run_timeout_seconds,
            options=options,
            secrets=secrets,
        )
        removed = set(before or []) - set(updated.modes or [])
        failed = _fail_stranded(organization_id=organization_id, modes=removed)
    return updated, failed


def own_account_set_enabled(
    *, organization: Organization, account_id: object, enabled: bool
) -> UpstreamAccount:
    """Switch an own account on or off. Off, it takes no new job; running ones finish; queued
    ``own`` tasks stay queued (it still counts as serving its modes, so it may take them when
    switched on again before their start deadline, which fails them otherwise)."""
    account = own_account_get(organization=organization, account_id=account_id)
    upstream_account_set_enabled(account=account, enabled=enabled)
    return own_account_get(organization=organization, account_id=account.pk)


def own_account_delete(*, organization: Organization, account_id: object) -> list[str]:
    """Remove an own account. Refused while it runs jobs (switch it off and let them finish);
    finished tasks keep their history without it. When no other own account of the
    organization (enabled or not) serves one of its modes, the organization's queued ``own``
    tasks of that mode are failed with it (see the module's docstring); their ids are
    returned."""
    account = own_account_get(organization=organization, account_id=account_id)
    with transaction.atomic():
        _lock_organization(organization.pk)
        locked = (
            UpstreamAccount.objects.select_for_update()
            .filter(pk=account.pk, owner=organization)
            .first()
        )
        if locked is None:
            raise NotFound("No such upstream account.")
        running = Task.objects.filter(
            upstream_account=locked, status__in=(Status.SUBMITTED, Status.IN_PROGRESS)
        ).count()
        if running:
            raise Conflict(
                f"The account still runs {running} task(s); switch it off, wait for them to "
                "finish, then remove it.",
                code="account_busy",
                details={"running": running},
            )
        modes = set(locked.modes or [])
        locked.delete()
        return _fail_stranded(organization_id=organization.pk, modes=modes)
