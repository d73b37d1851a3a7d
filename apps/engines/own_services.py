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

from .base import engine_names
from .models import UpstreamAccount
from .own_selectors import own_account_get
from .services import (
    secrets_keep_generated,
    upstream_account_clean,
    upstream_account_set_enabled,
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
    down what exists)."""
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
            # Locked: the generated callback token is written under this lock too
            # (``mjproxy_callback_token_ensure``), so one made meanwhile is carried over.
            current = (
                UpstreamAccount.objects.select_for_update(no_key=True)
                .filter(pk=account.pk, owner=organization)
                .first()
            )
            if current is None:
                raise NotFound("No such upstream account.")
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
    except IntegrityError as exc:
        raise Conflict(
            f"Your organization already has an upstream account named '{clean.name}'.",
            details={"field": "name"},
        ) from exc
    return own_account_get(organization=organization, account_id=account.pk)


def own_account_set_enabled(
    *, organization: Organization, account_id: object, enabled: bool
) -> UpstreamAccount:
    """Switch an own account on or off. Off, it takes no new job; running ones finish."""
    account = own_account_get(organization=organization, account_id=account_id)
    upstream_account_set_enabled(account=account, enabled=enabled)
    return own_account_get(organization=organization, account_id=account.pk)


def own_account_delete(*, organization: Organization, account_id: object) -> None:
    """Remove an own account. Refused while it runs jobs (switch it off and let them finish);
    finished tasks keep their history without it."""
    account = own_account_get(organization=organization, account_id=account_id)
    with transaction.atomic():
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
        locked.delete()
