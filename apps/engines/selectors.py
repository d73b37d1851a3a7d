"""Reads of upstream accounts shared by the dispatcher, the operator's retry and the stats page."""

from __future__ import annotations

from datetime import datetime

from apps.tasks.enums import Mode, Pool

from .base import get_engine
from .models import Health, UpstreamAccount

#: Modes that spend fast hours: an account whose fast hours ran out runs none of them, except
#: FAST when its engine falls back to relax for it (TURBO never falls back: it is paid for).
FAST_HOUR_MODES = frozenset({Mode.FAST, Mode.TURBO})


def _falls_back_to_relax(account: UpstreamAccount) -> bool:
    try:
        engine = get_engine(account.engine)
    except KeyError:
        return False
    return engine.fast_falls_back_to_relax(account.options or {})


def upstream_account_modes(account: UpstreamAccount, *, now: datetime) -> list[str]:
    """The modes new work may go to ``account`` for now (empty: none).

    Enabled and healthy — or cooling down with the cooldown already over (the sweeper marks it
    healthy again only on its next round) — it takes every mode it serves. With its fast hours
    exhausted it still takes RELAX work, and FAST work too when it is configured to fall back
    to relax. Needing verification or banned, it takes nothing.
    """
    if not account.is_enabled:
        return []
    served = [mode for mode in account.modes or [] if isinstance(mode, str)]
    if account.health == Health.HEALTHY:
        return served
    if account.health == Health.COOLING_DOWN:
        over = account.cooldown_until is not None and account.cooldown_until <= now
        return served if over else []
    if account.health == Health.FAST_HOURS_EXHAUSTED:
        fallback = _falls_back_to_relax(account)
        return [
            mode
            for mode in served
            if mode not in FAST_HOUR_MODES or (mode == Mode.FAST and fallback)
        ]
    return []


def upstream_account_usable(
    account: UpstreamAccount, *, now: datetime, mode: str | None = None
) -> bool:
    """Whether new work of ``mode`` (any mode it serves, without one) may go to ``account``."""
    modes = upstream_account_modes(account, now=now)
    return bool(modes) if mode is None else mode in modes


def upstream_account_takes(
    account: UpstreamAccount, *, organization_id: int, pool: str, is_test: bool = False
) -> bool:
    """Whether ``account`` may ever run a task of ``organization_id`` asking for ``pool``: the
    one definition of the isolation between tenants' own accounts and the shared pool.

    An organization's own account runs only that organization's ``own`` and
    ``own_then_shared`` tasks; a shared account runs every ``shared`` and ``own_then_shared``
    task, never an ``own`` one. Test tasks run on the built-in sandbox pool only.
    """
    if account.is_sandbox_pool != is_test:
        return False
    if account.owner_id is not None:
        return account.owner_id == organization_id and pool != Pool.SHARED
    return pool != Pool.OWN


def upstream_account_owned_usable(*, organization_id: int, mode: str, now: datetime) -> bool:
    """Whether the organization has an own account that may take new ``mode`` work now."""
    return any(
        upstream_account_usable(account, now=now, mode=mode)
        for account in UpstreamAccount.objects.filter(owner_id=organization_id, is_enabled=True)
    )
