"""Reads of upstream accounts shared by the dispatcher, the operator's retry and the stats page."""

from __future__ import annotations

from datetime import datetime

from .models import Health, UpstreamAccount


def upstream_account_usable(account: UpstreamAccount, *, now: datetime) -> bool:
    """Whether new work may go to ``account`` now: enabled, and healthy — or cooling down with
    the cooldown already over (the sweeper marks it healthy again only on its next round)."""
    if not account.is_enabled:
        return False
    if account.health == Health.HEALTHY:
        return True
    return account.health == Health.COOLING_DOWN and (
        account.cooldown_until is not None and account.cooldown_until <= now
    )
