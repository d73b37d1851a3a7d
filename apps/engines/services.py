"""Operator-side writes for upstream accounts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.errors import Conflict, NotFound, ValidationFailed
from apps.tasks.enums import Mode

from .base import engine_names, get_engine
from .models import Health, UpstreamAccount
from .notify import account_left_service

#: Option names that are credentials: stored encrypted in ``secrets``, never in ``options``.
SECRET_OPTIONS = {"secret", "token", "password", "api_key", "cookie"}


#: Credentials mjgate generated itself, not typed by anyone: the mjproxy callback token, which
#: the callback URL of every job in flight carries. New credentials keep it; only clearing
#: them all (``{}``) or giving one explicitly replaces it.
GENERATED_SECRETS = ("callback_token",)

#: The largest integer a JSON number carries exactly everywhere (JavaScript's doubles): a
#: longer run of digits, such as a Discord id, stays the string it was given.
_JSON_SAFE_INT = 2**53 - 1
#: The columns' limits (PositiveSmallIntegerField, PositiveIntegerField).
QUEUE_SIZE_MAX = 32767
RUN_TIMEOUT_MAX = 2**31 - 1
NAME_MAX = 100


def _coerce(value: str) -> Any:
    """A plain option typed as text (the command line's ``--option key=value``, a form) as the
    JSON value it spells: ``true``/``false``, a number. Only when the number is exactly what
    was written and safe in JSON: ``0123``, ``1e400`` or an 18-digit id stay strings (a client
    reading an id back as a JSON number would round it)."""
    text = value.strip()
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        canonical = str(number) == text
        return number if canonical and abs(number) <= _JSON_SAFE_INT else value
    if not any(ch.isdigit() for ch in text) or "_" in text:
        return value
    try:
        real = float(text)
    except ValueError:
        return value
    return real if math.isfinite(real) else value


def secrets_keep_generated(
    *, stored: Mapping[str, Any], new: dict[str, Any], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``new`` credentials with the generated ones (``GENERATED_SECRETS``) of ``stored``
    carried over, unless the caller gave one itself or cleared the credentials (``{}``)."""
    if given is not None and not given:
        return new
    kept = dict(new)
    for key in GENERATED_SECRETS:
        if key not in kept and stored.get(key):
            kept[key] = stored[key]
    return kept


@dataclass(frozen=True)
class AccountSettings:
    """Validated settings of an upstream account; credentials separated from plain options."""

    name: str
    engine: str
    modes: list[str]
    concurrency: int
    queue_size: int
    run_timeout_seconds: int
    options: dict[str, Any]
    secrets: dict[str, Any]


def upstream_account_clean(
    *,
    engine: str,
    name: str,
    modes: list[str],
    concurrency: int = 3,
    queue_size: int = 10,
    run_timeout_seconds: int | None = None,
    options: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> AccountSettings:
    """Check account settings without saving anything (forms call it to show errors in place).

    Credential options (``SECRET_OPTIONS``) found among ``options`` move to ``secrets``.
    """
    if run_timeout_seconds is None:
        run_timeout_seconds = int(settings.TASK_DEFAULT_RUN_TIMEOUT.total_seconds())
    if engine not in engine_names():
        raise ValidationFailed(
            f"Unknown engine '{engine}'. Known engines: {', '.join(engine_names())}."
        )
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("An upstream account needs a name.")
    if len(name) > NAME_MAX:
        raise ValidationFailed(
            f"An upstream account's name has at most {NAME_MAX} characters.",
            details={"field": "name"},
        )
    clean_modes = []
    for mode in modes:
        value = mode.strip().upper()
        if value == "NORMAL":
            value = Mode.RELAX
        if value not in Mode.values:
            raise ValidationFailed(f"Unknown mode '{mode}'. Use FAST, RELAX or TURBO.")
        if value not in clean_modes:
            clean_modes.append(value)
    if not clean_modes:
        raise ValidationFailed("An upstream account must serve at least one mode.")
    if not 1 <= concurrency <= 100:
        raise ValidationFailed("concurrency must be between 1 and 100.")
    if not 0 <= queue_size <= QUEUE_SIZE_MAX:
        raise ValidationFailed(
            f"queue size must be between 0 and {QUEUE_SIZE_MAX}.",
            details={"field": "queue_size"},
        )
    if run_timeout_seconds < 10:
        raise ValidationFailed(
            "run timeout must be at least 10 seconds.", details={"field": "run_timeout_seconds"}
        )
    if run_timeout_seconds > RUN_TIMEOUT_MAX:
        raise ValidationFailed(
            f"run timeout must be at most {RUN_TIMEOUT_MAX} seconds.",
            details={"field": "run_timeout_seconds"},
        )
    plain: dict[str, Any] = {}
    secret: dict[str, Any] = dict(secrets or {})
    for key, value in (options or {}).items():
        if key in SECRET_OPTIONS:
            secret[key] = value  # credentials stay exactly as given: "0123" is not 123
        else:
            plain[key] = _coerce(value) if isinstance(value, str) else value
    try:
        get_engine(engine).validate_options(plain, secret)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    return AccountSettings(
        name=name,
        engine=engine,
        modes=clean_modes,
        concurrency=concurrency,
        queue_size=queue_size,
        run_timeout_seconds=run_timeout_seconds,
        options=plain,
        secrets=secret,
    )


def upstream_account_create(
    *,
    engine: str,
    name: str,
    modes: list[str],
    concurrency: int = 3,
    queue_size: int = 10,
    run_timeout_seconds: int | None = None,
    options: dict[str, Any] | None = None,
) -> UpstreamAccount:
    """Create an upstream account. Credential options go to the encrypted ``secrets`` only."""
    clean = upstream_account_clean(
        engine=engine,
        name=name,
        modes=modes,
        concurrency=concurrency,
        queue_size=queue_size,
        run_timeout_seconds=run_timeout_seconds,
        options=options,
    )
    try:
        with transaction.atomic():
            return UpstreamAccount.objects.create(
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
        raise Conflict(f"An upstream account named '{clean.name}' already exists.") from exc


def upstream_account_update(
    *,
    account: UpstreamAccount,
    name: str,
    modes: list[str],
    concurrency: int,
    queue_size: int,
    run_timeout_seconds: int,
    options: dict[str, Any],
    secrets: dict[str, Any] | None = None,
) -> UpstreamAccount:
    """Change an account's settings. The engine never changes (its jobs belong to it).

    ``secrets=None`` keeps the stored credentials; a dict replaces them (``{}`` clears them).
    A generated credential (``GENERATED_SECRETS``) is kept unless cleared or given.
    Tasks already running keep their account; new limits apply to the next dispatch.
    """
    stored = UpstreamAccount.objects.get(pk=account.pk)
    clean = upstream_account_clean(
        engine=stored.engine,
        name=name,
        modes=modes,
        concurrency=concurrency,
        queue_size=queue_size,
        run_timeout_seconds=run_timeout_seconds,
        options=options,
        # EncryptedJSONField is typed as its TextField base; it holds a dict.
        secrets=cast(dict[str, Any], stored.secrets) if secrets is None else secrets,
    )
    try:
        with transaction.atomic():
            # Locked: the generated callback token is written under this lock too
            # (``mjproxy_callback_token_ensure``), so one made meanwhile is carried over.
            locked = UpstreamAccount.objects.select_for_update(no_key=True).filter(pk=account.pk)
            current = locked.first()
            if current is None:
                raise NotFound("No such upstream account.")
            UpstreamAccount.objects.filter(pk=account.pk).update(
                name=clean.name,
                modes=clean.modes,
                concurrency=clean.concurrency,
                queue_size=clean.queue_size,
                run_timeout_seconds=clean.run_timeout_seconds,
                options=clean.options,
                secrets=secrets_keep_generated(
                    stored=cast(dict[str, Any], current.secrets) or {},
                    new=clean.secrets,
                    given=secrets,
                ),
                updated_at=timezone.now(),
            )
    except IntegrityError as exc:
        raise Conflict(f"An upstream account named '{clean.name}' already exists.") from exc
    account.refresh_from_db()
    return account


def upstream_account_set_enabled(*, account: UpstreamAccount, enabled: bool) -> UpstreamAccount:
    now = timezone.now()
    UpstreamAccount.objects.filter(pk=account.pk).update(is_enabled=enabled, updated_at=now)
    account.is_enabled = enabled
    account.updated_at = now
    return account


def _serving(account_id: int) -> bool:
    return UpstreamAccount.objects.filter(
        pk=account_id, is_enabled=True, health=Health.HEALTHY
    ).exists()


def upstream_account_set_health(
    *, account: UpstreamAccount, health: str, reason: str = ""
) -> UpstreamAccount:
    """Set the health state and its reason. An account that leaves the healthy state this way
    is told to the operators by e-mail (``apps.engines.notify``)."""
    if health not in Health.values:
        raise ValidationFailed(f"Unknown health state '{health}'.")
    was_serving = _serving(account.pk)
    now = timezone.now()
    UpstreamAccount.objects.filter(pk=account.pk).update(
        health=health,
        health_reason=reason[:500],
        health_changed_at=now,
        cooldown_until=None,
        consecutive_failures=0 if health == Health.HEALTHY else account.consecutive_failures,
    )
    account.refresh_from_db()
    if was_serving and health != Health.HEALTHY:
        account_left_service(account=account, health=health, reason=reason)
    return account


def upstream_account_take_out(
    *, account_id: int, health: str, reason: str, disable: bool = False
) -> None:
    """An engine found that the account cannot serve: record why (the admin shows
    ``health_reason``), disable it when it needs new credentials, and tell the operators once
    (one mail, even when the state and the switch both change)."""
    account = UpstreamAccount.objects.filter(pk=account_id).first()
    if account is None:
        return
    was_serving = account.health == Health.HEALTHY and account.is_enabled
    if health not in Health.values:
        raise ValidationFailed(f"Unknown health state '{health}'.")
    if account.health != health or account.health_reason != reason[:500]:
        UpstreamAccount.objects.filter(pk=account.pk).update(
            health=health,
            health_reason=reason[:500],
            health_changed_at=timezone.now(),
            cooldown_until=None,
        )
    if disable and account.is_enabled:
        UpstreamAccount.objects.filter(pk=account.pk).update(is_enabled=False)
    account.refresh_from_db()
    if was_serving and (health != Health.HEALTHY or disable):
        account_left_service(account=account, health=health, reason=reason, disabled=disable)


def upstream_account_pause(*, account_id: int, until: datetime, reason: str) -> bool:
    """The upstream asked us to wait (a long rate limit): no new work for the account until
    ``until``. A healthy account (or one whose cooldown is over) cools down till then; one in
    a longer cooldown or another state keeps it. Routine, so nobody is e-mailed. Returns
    whether the account was paused."""
    now = timezone.now()
    return bool(
        UpstreamAccount.objects.filter(
            Q(health=Health.HEALTHY) | Q(health=Health.COOLING_DOWN, cooldown_until__lt=until),
            pk=account_id,
        ).update(
            health=Health.COOLING_DOWN,
            health_reason=reason[:500],
            health_changed_at=now,
            cooldown_until=until,
        )
    )
