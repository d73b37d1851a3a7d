"""Telling the operators by e-mail that an upstream account stopped serving, and why.

For every engine: the health services call it when an account leaves the healthy state (an
engine found it banned, out of fast hours, needing verification, its token rejected), and the
lifecycle when a run of failures puts it into cooldown. A cooldown ends by itself, so those
mails are sent at most once an hour per account; the other states need an operator, so each
change is told. Mails go out after the transaction commits, to the active staff users.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction

from .models import Health, UpstreamAccount

logger = logging.getLogger(__name__)

#: At most one cooldown mail per account this often (seconds).
COOLDOWN_MAIL_EVERY = 3600


def _operators() -> list[str]:
    return list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .order_by("pk")
        .values_list("email", flat=True)
    )


def account_left_service(
    *,
    account: UpstreamAccount,
    health: str,
    reason: str,
    disabled: bool = False,
    until: datetime | None = None,
) -> bool:
    """Queue the mail (sent on commit). Returns whether one was queued.

    An organization's own account (bring your own) is its owner's business: its state and
    reason show on the owner's dashboard, and the platform's operators are not mailed."""
    if account.owner_id is not None:
        logger.info("own upstream account %s left service: %s (%s)", account.pk, health, reason)
        return False
    if health == Health.COOLING_DOWN and not disabled:
        key = f"engines:health-mail:cooldown:{account.pk}"
        if not cache.add(key, 1, timeout=COOLDOWN_MAIL_EVERY):
            return False
    recipients = _operators()
    if not recipients:
        return False
    state = "disabled" if disabled else Health(health).label.lower()
    subject = f"[mjgate] Upstream account {account.name} ({account.engine}) is {state}"
    lines = [
        f"The {account.engine} account {account.name} (#{account.pk}) stopped serving tasks: "
        f"{state}.",
        "",
        f"Why: {reason or Health(health).label}",
        "",
    ]
    if health == Health.COOLING_DOWN and until is not None and not disabled:
        lines.append(
            f"It takes work again by itself at {until:%Y-%m-%d %H:%M:%S %Z}; repeated cooldowns "
            "of this account are told at most once an hour."
        )
    elif health == Health.FAST_HOURS_EXHAUSTED and not disabled:
        lines.append(
            "It still runs RELAX work (and FAST work in relax, if it is set to fall back). Once "
            "its fast hours are renewed, mark it healthy in the operator admin."
        )
    else:
        lines.append(
            "Tasks that were not sent yet go to the other accounts. Fix the account and set it "
            "healthy (and enabled) again in the operator admin."
        )
    body = "\n".join(lines)
    logger.warning("upstream account %s left service: %s (%s)", account.pk, state, reason)
    transaction.on_commit(lambda: send_mail(subject, body, None, recipients, fail_silently=True))
    return True


def account_cooling_down(*, account_id: int) -> bool:
    """A run of failures just put the account into cooldown (the lifecycle counts them)."""
    account = UpstreamAccount.objects.filter(pk=account_id, health=Health.COOLING_DOWN).first()
    if account is None:
        return False
    return account_left_service(
        account=account,
        health=Health.COOLING_DOWN,
        reason=account.health_reason,
        until=account.cooldown_until,
    )
