"""Gateway leases: which process holds which account's WebSocket (compare-and-set in SQL).

A lease is taken only when it is free, expired or already ours; it is renewed well before it
expires (``RENEW_EVERY`` < ``TTL``), and a holder that fails to renew stops its connection
before the lease could have passed to someone else. A process that dies simply stops
renewing: another takes its accounts over once the lease expires, within ``TTL`` plus one
renewal round (30 s + 10 s by default, under the 60 s the operations contract allows).

The lease also carries the account's Discord session (id, sequence number, user id), written
at READY, at every renewal and when a stopping holder releases it: the next holder resumes it
(``GatewayLease``), unless it was ended (``lease_release(forget_sessions=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from .models import GatewayLease

TTL = timedelta(seconds=30)
RENEW_EVERY = timedelta(seconds=10)


def lease_acquire(*, account_id: int, holder: str, ttl: timedelta = TTL) -> GatewayLease | None:
    """Take the account's lease if it is free, expired or ours; None if someone else has it."""
    GatewayLease.objects.get_or_create(account_id=account_id)
    now = timezone.now()
    taken = (
        GatewayLease.objects.filter(account_id=account_id)
        .filter(
            Q(holder=holder) | Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        )
        .update(holder=holder, expires_at=now + ttl)
    )
    return GatewayLease.objects.get(account_id=account_id) if taken else None


def lease_renew(
    *, holder: str, sessions: Mapping[int, tuple[str, int | None, str]], ttl: timedelta = TTL
) -> set[int]:
    """Renew our leases, recording each session (id, sequence, user id) for a successor that
    may resume it. Returns the accounts still ours."""
    now = timezone.now()
    kept = set()
    for account_id, (session_id, sequence, user_id) in sessions.items():
        updated = GatewayLease.objects.filter(account_id=account_id, holder=holder).update(
            expires_at=now + ttl, session_id=session_id, sequence=sequence, user_id=user_id
        )
        if updated:
            kept.add(account_id)
    return kept


def lease_release(
    *,
    holder: str,
    account_ids: Iterable[int],
    sessions: Mapping[int, tuple[str, int | None, str]] | None = None,
    forget_sessions: bool = False,
) -> int:
    """Give our leases back, for the next holder to take at once. ``sessions``: the state
    (id, sequence, user id) the stopped connections left their Discord sessions in, for the next
    holder to resume; ``forget_sessions``: the sessions were ended, nobody should try to resume
    them (the user id stays: it is still the account's). Other leases keep what the last
    renewal recorded. Returns how many were ours."""
    ids = set(account_ids)
    given = {
        account_id: state for account_id, state in (sessions or {}).items() if account_id in ids
    }
    released = 0
    for account_id, (session_id, sequence, user_id) in given.items():
        released += GatewayLease.objects.filter(account_id=account_id, holder=holder).update(
            holder="", expires_at=None, session_id=session_id, sequence=sequence, user_id=user_id
        )
    rest = GatewayLease.objects.filter(holder=holder, account_id__in=sorted(ids - given.keys()))
    if forget_sessions:
        return released + rest.update(holder="", expires_at=None, session_id="", sequence=None)
    return released + rest.update(holder="", expires_at=None)


def leases_held(*, holder: str) -> list[int]:
    return list(
        GatewayLease.objects.filter(holder=holder, expires_at__gte=timezone.now()).values_list(
            "account_id", flat=True
        )
    )


def lease_record_session(
    *, account_id: int, holder: str, session_id: str, sequence: int | None, user_id: str
) -> bool:
    """Write a fresh session down at once (READY): workers send interactions with its id."""
    return bool(
        GatewayLease.objects.filter(account_id=account_id, holder=holder).update(
            session_id=session_id, sequence=sequence, user_id=user_id
        )
    )
