"""Issuing, checking and revoking API keys."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal

from django.conf import settings
from django.core.cache import cache, caches
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError

from apps.accounts.models import MembershipTier, Organization, User
from apps.core.cache import LeanScript, redis_client
from apps.core.errors import PermissionDenied, ServiceError, ValidationFailed
from apps.core.ratelimit import PendingCount, api_key_bucket, cache_breaker, counted_cache_get
from apps.tasks.enums import Pool

from .models import LIVE_SCHEME, PREFIX_RANDOM_CHARS, TEST_SCHEME, ApiKey, hash_key

_ALPHABET = string.ascii_letters + string.digits
#: 32 base-62 characters = 190 bits of randomness (SPEC §2 asks for at least 160).
RANDOM_CHARS = 32


class _Keep(Enum):
    KEEP = "keep"


#: "Leave as it is" for the update fields where ``None`` has a meaning of its own: no expiry,
#: no IP allow-list.
KEEP: Final = _Keep.KEEP
Keep = Literal[_Keep.KEEP]


class ApiKeyRejected(ServiceError):
    """The presented key cannot be used. ``code`` says why; protocols map it to their format."""

    http_status = 401


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown to the user once, never stored


def _generate(is_test: bool) -> str:
    scheme = TEST_SCHEME if is_test else LIVE_SCHEME
    return scheme + "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_CHARS))


def _prefix_of(raw_key: str) -> str:
    scheme = TEST_SCHEME if raw_key.startswith(TEST_SCHEME) else LIVE_SCHEME
    return raw_key[: len(scheme) + PREFIX_RANDOM_CHARS]


#: The most networks an allow-list may hold (every authenticated request reads them all).
MAX_ALLOWED_IPS = 100
#: The most distinct entries read before any is parsed (several may be one network: an
#: address and its /32, CIDRs differing only in host bits).
MAX_ALLOWED_IPS_GIVEN = 10 * MAX_ALLOWED_IPS


def _clean_ips(values: list[str] | None) -> list[str]:
    """The allow-list as stored: each entry a network (an address is its /32 or /128, host
    bits of a CIDR are dropped), each network once, in the order given."""
    given = list(dict.fromkeys(text for text in (str(v).strip() for v in values or []) if text))
    if len(given) > MAX_ALLOWED_IPS_GIVEN:
        # Before any parsing: a pasted list of a million lines costs nothing but this count.
        raise _too_many_ips(len(given))
    cleaned: list[str] = []
    for value in given:
        try:
            network = str(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValidationFailed(
                f"'{value}' is not an IP address or CIDR network.",
                details={"field": "allowed_ips"},
            ) from exc
        if network not in cleaned:
            cleaned.append(network)
    if len(cleaned) > MAX_ALLOWED_IPS:
        raise _too_many_ips(len(cleaned))
    return cleaned


def _too_many_ips(count: int) -> ValidationFailed:
    return ValidationFailed(
        f"An IP allow-list holds at most {MAX_ALLOWED_IPS} addresses or networks ({count} given).",
        details={"field": "allowed_ips"},
    )


def _check_pool(organization: Organization, pool: str) -> None:
    """A key's default pool: a known one, and the organization's own accounts only on a plan
    that includes them (a submit re-checks: a plan can change after the key was made)."""
    if pool not in Pool.values:
        raise ValidationFailed(
            f"Unknown pool '{pool}'. Use shared, own or own_then_shared.",
            details={"field": "pool"},
        )
    tier = organization.tier
    if pool != Pool.SHARED and not tier.allows_own_accounts:
        raise PermissionDenied(
            f"The {tier.name} plan does not include your own upstream accounts, so a key "
            f"cannot default to the {pool} pool.",
            code="pool_not_allowed",
            details={"field": "pool", "tier": tier.code},
        )


def api_key_create(
    *,
    organization: Organization,
    name: str,
    created_by: User | None = None,
    is_test: bool = False,
    can_midjourney: bool = True,
    read_only: bool = False,
    can_read_billing: bool = True,
    allowed_ips: list[str] | None = None,
    expires_at: datetime | None = None,
    remix: bool = False,
    pool: str = Pool.SHARED,
) -> IssuedKey:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("An API key needs a name.", details={"field": "name"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("The expiry must be in the future.", details={"field": "expires_at"})
    _check_pool(organization, pool)
    plaintext = _generate(is_test)
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name[:100],
        prefix=_prefix_of(plaintext),
        key_hash=hash_key(plaintext),
        is_test=is_test,
        can_midjourney=can_midjourney,
        read_only=read_only,
        can_read_billing=can_read_billing,
        allowed_ips=_clean_ips(allowed_ips),
        expires_at=expires_at,
        remix=remix,
        pool=pool,
        created_by=created_by,
    )
    return IssuedKey(api_key=api_key, plaintext=plaintext)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke at once: the next request with this key is refused (its cached copy is dropped)."""
    if api_key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        api_key.revoked_at = now
    api_keys_changed(prefixes=[api_key.prefix])
    return api_key


def api_key_update(
    *,
    api_key: ApiKey,
    name: str | None = None,
    can_midjourney: bool | None = None,
    read_only: bool | None = None,
    can_read_billing: bool | None = None,
    allowed_ips: list[str] | Keep | None = KEEP,
    expires_at: datetime | Keep | None = KEEP,
    remix: bool | None = None,
    pool: str | None = None,
) -> ApiKey:
    """Change what is given; ``allowed_ips=None`` (or ``[]``) allows any address and
    ``expires_at=None`` makes the key never expire. A key revoked meanwhile (the caller's copy
    was read before the revocation committed) is refused, under the row's lock."""
    with transaction.atomic():
        revoked = (
            ApiKey.objects.select_for_update()
            .filter(pk=api_key.pk)
            .values_list("revoked_at", flat=True)
            .first()
        )
        if revoked is not None:
            api_key.revoked_at = revoked
            raise ValidationFailed("A revoked API key cannot be changed.")
        return _api_key_change(
            api_key=api_key,
            name=name,
            can_midjourney=can_midjourney,
            read_only=read_only,
            can_read_billing=can_read_billing,
            allowed_ips=allowed_ips,
            expires_at=expires_at,
            remix=remix,
            pool=pool,
        )


def _api_key_change(
    *,
    api_key: ApiKey,
    name: str | None,
    can_midjourney: bool | None,
    read_only: bool | None,
    can_read_billing: bool | None,
    allowed_ips: list[str] | Keep | None,
    expires_at: datetime | Keep | None,
    remix: bool | None,
    pool: str | None,
) -> ApiKey:
    if name is not None:
        if not name.strip():
            raise ValidationFailed("An API key needs a name.", details={"field": "name"})
        api_key.name = name.strip()[:100]
    if can_midjourney is not None:
        api_key.can_midjourney = can_midjourney
    if read_only is not None:
        api_key.read_only = read_only
    if can_read_billing is not None:
        api_key.can_read_billing = can_read_billing
    if remix is not None:
        api_key.remix = remix
    if pool is not None:
        _check_pool(api_key.organization, pool)
        api_key.pool = pool
    if allowed_ips is not KEEP:
        api_key.allowed_ips = _clean_ips(allowed_ips)
    if expires_at is not KEEP:
        api_key.expires_at = expires_at
    api_key.save()
    return api_key


def api_key_authenticate(*, raw_key: str, client_ip: str | None) -> ApiKey:
    """Resolve a presented key to an active ApiKey or raise ``ApiKeyRejected``.

    The row is found by its clear prefix and confirmed by a constant-time comparison of hashes,
    so response timing says nothing about how much of a guessed key was right.
    """
    return api_key_authenticate_counted(raw_key=raw_key, client_ip=client_ip, rate_limit=0)[0]


def api_key_authenticate_counted(
    *, raw_key: str, client_ip: str | None, rate_limit: int
) -> tuple[ApiKey, PendingCount | None]:
    """:func:`api_key_authenticate`, counting the request against the key's rate-limit bucket
    (``rate_limit`` per minute; 0: not counted) in the key lookup's Redis round trip. The
    pending count goes to the rate throttle; a rejected key gives it back."""
    raw_key = (raw_key or "").strip()
    if not raw_key.startswith((LIVE_SCHEME, TEST_SCHEME)):
        raise ApiKeyRejected("The API key is not valid.", code="invalid_api_key")
    presented_hash = hash_key(raw_key)
    candidates, from_database, pending = _keys_with_prefix(
        _prefix_of(raw_key), bucket=api_key_bucket(presented_hash), rate_limit=rate_limit
    )
    try:
        match = _check(candidates, presented_hash, client_ip)
    except BaseException:
        if pending is not None:
            pending.give_back()
        raise
    if from_database:
        # A cached copy's last_used_at may be older than the row's; the copy is refreshed at
        # least every KEY_CACHE_SECONDS, well within the last-used resolution.
        _touch(match, client_ip)
    return match, pending


def _check(candidates: list[ApiKey], presented_hash: str, client_ip: str | None) -> ApiKey:
    match = None
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, presented_hash):
            match = candidate
    if match is None:
        raise ApiKeyRejected("The API key is not valid.", code="invalid_api_key")
    if match.is_revoked:
        raise ApiKeyRejected("The API key has been revoked.", code="api_key_revoked")
    if match.is_expired:
        raise ApiKeyRejected("The API key has expired.", code="api_key_expired")
    if not match.organization.is_active:
        raise ApiKeyRejected("The organization of this API key is disabled.", code="org_disabled")
    if not match.ip_allowed(client_ip):
        error = ApiKeyRejected(
            f"Requests from {client_ip or 'an unknown address'} are not allowed for this API key.",
            code="ip_not_allowed",
        )
        error.http_status = 403
        raise error
    return match


# --- the key cache -----------------------------------------------------------------------------
# The keys of a prefix (with their organization and tier) are kept in the shared cache for
# KEY_CACHE_SECONDS. Any change of a key, its organization or its tier replaces the entry with a
# tombstone for a few seconds, in the changing transaction and again when it commits, and readers only
# ``add`` (never overwrite): a reader that loaded the row before a revocation cannot put the old
# copy back, so a revocation takes effect with the next request.

KEY_CACHE_SECONDS = 30
#: How long a change keeps readers from caching the keys it touched (covers a reader that
#: loaded the row just before the change and adds it just after).
TOMBSTONE_SECONDS = 5
_TOMBSTONE = "changed"


def _key_cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def _keys_with_prefix(
    prefix: str, *, bucket: str, rate_limit: int
) -> tuple[list[ApiKey], bool, PendingCount | None]:
    """The keys with ``prefix``, whether they were read from the database, and the request's
    count against ``bucket`` when it travelled with the cache read."""
    cached: object = _TOMBSTONE
    pending = None
    if not cache_breaker.is_open():
        try:
            cached, pending = counted_cache_get(
                cache_key=_key_cache_key(prefix), bucket=bucket, limit=rate_limit
            )
        except (RedisError, OSError) as exc:
            cache_breaker.trip(exc)
    if isinstance(cached, list):
        return cached, False, pending
    # The prefix's generation before the rows are read: the copy is cached only if no change
    # was published since (``_fill``), however long this request stalls in between.
    seen = _generation_seen(prefix) if cached is None else None
    try:
        rows = list(
            ApiKey.objects.select_related("organization", "organization__tier").filter(
                prefix=prefix
            )
        )
    except BaseException:
        if pending is not None:
            pending.give_back()
        raise
    if cached is None:
        try:
            _fill(prefix, rows, seen)
        except (RedisError, OSError) as exc:
            cache_breaker.trip(exc)
    return rows, True, pending


#: Seconds a prefix's generation lives: far longer than a request can stall between reading the
#: generation and filling the cache (an expired generation reads as none, which fails the fill).
GENERATION_SECONDS = 24 * 3600
#: A fill as one command: KEYS the cached copy, the prefix's generation; ARGV the generation
#: the reader saw before it read the rows ('' for none), the copy, its lifetime. Sets the copy
#: (never over an entry: a tombstone or a newer copy) only if the generation is unchanged.
_FILL = """
if (redis.call('get', KEYS[2]) or '') ~= ARGV[1] then return 0 end
if redis.call('set', KEYS[1], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then return 1 end
return 0
"""
_fill_script = LeanScript(_FILL)


def _generation_key(prefix: str) -> str:
    return f"apikey-generation:{prefix}"


def _generation_seen(prefix: str) -> tuple[bool, Any] | None:
    """The prefix's generation as the cache holds it, with whether it was read from Redis
    itself (raw bytes, for the fill's compare-and-set); None when unreadable (then no fill)."""
    client = redis_client()
    try:
        if client is None:
            return False, cache.get(_generation_key(prefix))
        return True, bytes(client.get(caches["default"].make_key(_generation_key(prefix))) or b"")
    except (RedisError, OSError) as exc:
        cache_breaker.trip(exc)
        return None


def _fill(prefix: str, rows: list[ApiKey], seen: tuple[bool, Any] | None) -> None:
    """Cache ``rows`` for ``prefix`` unless a change was published after ``seen`` was read:
    on Redis in one command (``_FILL``); on another cache (one process's memory) by reading
    the generation again right before the ``add``."""
    if seen is None:
        return
    raw, generation = seen
    if not raw:
        if cache.get(_generation_key(prefix)) == generation:
            cache.add(_key_cache_key(prefix), rows, KEY_CACHE_SECONDS)
        return
    backend: Any = caches["default"]
    _fill_script(
        redis_client(),
        keys=[backend.make_key(_key_cache_key(prefix)), backend.make_key(_generation_key(prefix))],
        args=[generation, backend._cache._serializer.dumps(rows), KEY_CACHE_SECONDS],
    )


def api_keys_changed(*, prefixes: list[str]) -> None:
    """Drop the cached copies of these keys now and again when the change commits."""
    if not prefixes:
        return

    def drop() -> None:
        try:
            cache.set_many({_key_cache_key(p): _TOMBSTONE for p in prefixes}, TOMBSTONE_SECONDS)
            # A new generation: a reader that read the rows before this change cannot cache
            # them, even after the tombstone is gone (``_fill``).
            cache.set_many(
                {_generation_key(p): secrets.token_hex(8) for p in prefixes}, GENERATION_SECONDS
            )
        except (RedisError, OSError) as exc:
            # Readers fail open to the database while the breaker is open, and entries written
            # before the outage expire within KEY_CACHE_SECONDS.
            cache_breaker.trip(exc)

    drop()
    transaction.on_commit(drop)


def api_key_saved(*, instance: ApiKey, **_: object) -> None:
    """Receiver of ApiKey's save and delete signals (connected in ``ApiKeysConfig.ready``)."""
    api_keys_changed(prefixes=[instance.prefix])


def organization_saved(*, instance: Organization, **_: object) -> None:
    """Receiver of Organization's save signal: its keys carry a copy of it."""
    api_keys_changed(
        prefixes=list(ApiKey.objects.filter(organization=instance).values_list("prefix", flat=True))
    )


def tier_saved(*, instance: MembershipTier, **_: object) -> None:
    """Receiver of MembershipTier's save signal: keys carry a copy of their tier."""
    api_keys_changed(
        prefixes=list(
            ApiKey.objects.filter(organization__tier=instance).values_list("prefix", flat=True)
        )
    )


def _touch(api_key: ApiKey, client_ip: str | None) -> None:
    now = timezone.now()
    stale_before = now - settings.API_KEY_LAST_USED_RESOLUTION
    if api_key.last_used_at is not None and api_key.last_used_at > stale_before:
        return
    # Conditional, so concurrent requests do not all write.
    ApiKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale_before)
    ).update(last_used_at=now, last_used_ip=client_ip)
    api_key.last_used_at = now
    api_key.last_used_ip = client_ip


# --- keys managing keys (native API) ---------------------------------------------------------
# A key may create, change and revoke the keys of its organization, but never grant more than
# it holds itself: otherwise a leaked read-only, billing-less, IP-restricted or expiring key
# could mint an unrestricted one. Read-only keys cannot manage keys at all, and a test key only
# manages test keys (a leaked test key must not touch live keys, which spend money).


def _within(networks: list[str], allowed: list[str]) -> bool:
    parents = [ipaddress.ip_network(n, strict=False) for n in allowed]
    for value in networks:
        network = ipaddress.ip_network(value, strict=False)
        if not any(
            network.version == parent.version and network.subnet_of(parent)  # type: ignore[arg-type]
            for parent in parents
        ):
            return False
    return True


def _check_delegation(
    *,
    caller: ApiKey,
    is_test: bool,
    can_midjourney: bool | None,
    read_only: bool | None,
    can_read_billing: bool | None,
    allowed_ips: list[str] | Keep,
    expires_at: datetime | Keep | None,
) -> None:
    """``allowed_ips`` and ``expires_at`` are the values the key will have (``[]``: any
    address, ``None``: never expires), or ``KEEP`` when they do not change."""
    if caller.read_only:
        raise PermissionDenied("A read-only API key cannot manage API keys.")
    if caller.is_test and not is_test:
        raise PermissionDenied("A test API key can only manage test keys.")
    if can_midjourney and not caller.can_midjourney:
        raise PermissionDenied("A key cannot grant the midjourney permission it lacks itself.")
    if can_read_billing and not caller.can_read_billing:
        raise PermissionDenied("A key cannot grant the billing read permission it lacks itself.")
    if read_only is False and caller.read_only:  # pragma: no cover - refused above
        raise PermissionDenied("A read-only key cannot create writing keys.")
    if (
        caller.allowed_ips
        and allowed_ips is not KEEP
        and (not allowed_ips or not _within(allowed_ips, caller.allowed_ips))
    ):
        raise PermissionDenied(
            "The IP allow-list must stay within this key's own allow-list.",
            details={"field": "allowed_ips"},
        )
    if (
        caller.expires_at is not None
        and expires_at is not KEEP
        and (expires_at is None or expires_at > caller.expires_at)
    ):
        raise PermissionDenied(
            "The expiry cannot be later than this key's own expiry.",
            details={"field": "expires_at"},
        )


def api_key_create_by_key(
    *,
    caller: ApiKey,
    name: str,
    is_test: bool = False,
    can_midjourney: bool = True,
    read_only: bool = False,
    can_read_billing: bool = True,
    allowed_ips: list[str] | None = None,
    expires_at: datetime | None = None,
    remix: bool = False,
    pool: str = Pool.SHARED,
) -> IssuedKey:
    """Issue a key of ``caller``'s organization with no more power than ``caller``.

    Unset restrictions are inherited: no allow-list means the caller's, no expiry the caller's.
    """
    cleaned_ips = _clean_ips(allowed_ips)
    if not cleaned_ips and caller.allowed_ips:
        cleaned_ips = list(caller.allowed_ips)
    if expires_at is None:
        expires_at = caller.expires_at
    _check_delegation(
        caller=caller,
        is_test=is_test,
        can_midjourney=can_midjourney,
        read_only=read_only,
        can_read_billing=can_read_billing,
        allowed_ips=cleaned_ips,
        expires_at=expires_at,
    )
    return api_key_create(
        organization=caller.organization,
        name=name,
        is_test=is_test,
        can_midjourney=can_midjourney,
        read_only=read_only,
        can_read_billing=can_read_billing,
        allowed_ips=cleaned_ips,
        expires_at=expires_at,
        remix=remix,
        pool=pool,
    )


def api_key_update_by_key(
    *,
    caller: ApiKey,
    api_key: ApiKey,
    name: str | None = None,
    can_midjourney: bool | None = None,
    read_only: bool | None = None,
    can_read_billing: bool | None = None,
    allowed_ips: list[str] | Keep | None = KEEP,
    expires_at: datetime | Keep | None = KEEP,
    remix: bool | None = None,
    pool: str | None = None,
) -> ApiKey:
    """Change a key of the caller's organization; only what the caller holds may be granted.

    ``allowed_ips=None`` (or ``[]``) removes the allow-list and ``expires_at=None`` the expiry;
    a caller that is itself restricted that way cannot lift the restriction from another key.
    """
    if api_key.organization_id != caller.organization_id:  # pragma: no cover - selector scoped
        raise ValidationFailed("Unknown API key.")
    if api_key.is_revoked:
        raise ValidationFailed("A revoked API key cannot be changed.")
    cleaned_ips = _clean_ips(allowed_ips) if allowed_ips is not KEEP else KEEP
    _check_delegation(
        caller=caller,
        is_test=api_key.is_test,
        can_midjourney=can_midjourney,
        read_only=read_only,
        can_read_billing=can_read_billing,
        allowed_ips=cleaned_ips,
        expires_at=expires_at,
    )
    if isinstance(expires_at, datetime) and expires_at <= timezone.now():
        raise ValidationFailed("The expiry must be in the future.", details={"field": "expires_at"})
    return api_key_update(
        api_key=api_key,
        name=name,
        can_midjourney=can_midjourney,
        read_only=read_only,
        can_read_billing=can_read_billing,
        allowed_ips=cleaned_ips,
        expires_at=expires_at,
        remix=remix,
        pool=pool,
    )


def api_key_revoke_by_key(*, caller: ApiKey, api_key: ApiKey) -> ApiKey:
    if caller.read_only:
        raise PermissionDenied("A read-only API key cannot manage API keys.")
    if caller.is_test and not api_key.is_test:
        raise PermissionDenied("A test API key can only manage test keys.")
    return api_key_revoke(api_key=api_key)
