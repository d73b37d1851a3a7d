"""Request limits for every public API dialect: per-key rates (SPEC §6.3) and body size.

A sliding-window counter in the Django cache (Redis in production): the count of the current
fixed window plus the previous window's count weighted by how much of it still overlaps the
sliding window. GET, INCR and EXPIRE are pipelined on the process's one client; for a
key-authenticated request they travel in the key lookup's round trip, one script
(:func:`counted_cache_get`),
so the limiter adds no Redis round trip of its own. No read-modify-write race, and a
burst at a window boundary cannot double the allowance as it can with plain fixed windows.

When the cache is unreachable (a Redis outage) the limiter fails open: the request is allowed,
a warning is logged, and the cache is not asked again for :data:`CACHE_RETRY_SECONDS`, so an
outage neither turns every API call into a 500 nor adds a connect timeout to each of them.

Each dialect maps :class:`rest_framework.exceptions.Throttled` (raised by DRF when
:class:`ApiKeyRateThrottle` refuses) to its own error shape, always with ``Retry-After``.

Request bodies are capped by :class:`RequestSizeLimitMixin` from the declared Content-Length,
before a byte of the body is read: a 200 MB JSON body would otherwise be read into memory,
copied for the Idempotency-Key fingerprint and parsed before any image validation refused it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps.api_keys.models import ApiKey

from .cache import LeanScript, redis_client
from .errors import ServiceError

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 60
#: After the cache failed, requests pass unlimited this long before the cache is tried again.
CACHE_RETRY_SECONDS = 10.0
#: The largest request body any API endpoint accepts. The biggest legitimate request is five
#: reference images of 10 MiB (the decoded size every submit allows) sent as base64 text, which
#: is 4/3 larger; 2 MiB more leave room for the prompt, state and metadata.
MAX_REQUEST_BODY_BYTES = 5 * 4 * math.ceil(10 * 1024 * 1024 / 3) + 2 * 1024 * 1024


class RequestTooLarge(ServiceError):
    code = "request_too_large"
    http_status = 413
    default_message = "The request body is too large."


def request_size_check(*, content_length: str | None) -> None:
    """Refuse a body larger than :data:`MAX_REQUEST_BODY_BYTES` from its declared length.

    The declared length is all that is ever read: Django's WSGI input stops at Content-Length,
    and a body without one (chunked) reaches Django as an empty body.
    """
    try:
        length = int(content_length or 0)
    except ValueError:
        return  # Django treats an unparsable length as an empty body
    if length > MAX_REQUEST_BODY_BYTES:
        limit_mib = MAX_REQUEST_BODY_BYTES / (1024 * 1024)
        raise RequestTooLarge(
            f"The request body is {length} bytes; at most {MAX_REQUEST_BODY_BYTES} bytes "
            f"({limit_mib:.0f} MiB) are accepted. Send at most five images of 10 MiB each.",
            details={"max_bytes": MAX_REQUEST_BODY_BYTES, "content_length": length},
        )


class RequestSizeLimitMixin:
    """For DRF API views: refuse an oversized body after authentication, before reading it."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        request_size_check(content_length=request.META.get("CONTENT_LENGTH"))


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int  # whole seconds; 0 when allowed


def _incr(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout)
        return 1


class _CacheBreaker:
    """Remembers, per process, that the cache failed and until when not to ask it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: Exception) -> None:
        with self._lock:
            first = not self.is_open()
            self._open_until = time.monotonic() + CACHE_RETRY_SECONDS
        if first:
            logger.warning(
                "rate limiting is off: the cache is unreachable (%s); requests pass unlimited "
                "and the cache is retried in %.0f s",
                exc.__class__.__name__,
                CACHE_RETRY_SECONDS,
            )

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0


cache_breaker = _CacheBreaker()


def rate_limit_hit(
    *, bucket: str, limit: int, window: int = DEFAULT_WINDOW_SECONDS, now: float | None = None
) -> RateDecision:
    """Count one request against ``bucket``; refuse it when more than ``limit`` per ``window``.

    A refused request is not counted, so a client that keeps retrying too early is not locked
    out for longer than its own excess. Fails open (allowed) while the cache is unreachable.
    """
    if limit <= 0 or cache_breaker.is_open():
        return RateDecision(True, 0)
    try:
        return _rate_limit_count(bucket=bucket, limit=limit, window=window, now=now)
    except (RedisError, OSError) as exc:  # connection refused, timed out, reset
        cache_breaker.trip(exc)
        return RateDecision(True, 0)


def _counts(current_key: str, previous_key: str, timeout: int) -> tuple[int, int, Any]:
    """(previous window's count, current window's count after this request, redis client).

    On Redis this is one round trip (a pipeline of GET, INCR and EXPIRE) on the process's
    client; other caches (tests, the embedded setup) use the cache API.
    """
    client = redis_client()
    if client is None:
        previous = int(cache.get(previous_key) or 0)
        return previous, _incr(current_key, timeout), None
    pipe = client.pipeline(transaction=False)
    pipe.get(cache.make_key(previous_key))
    pipe.incr(cache.make_key(current_key))
    pipe.expire(cache.make_key(current_key), timeout)
    previous, current, _ = pipe.execute()
    return int(previous or 0), int(current), client


def _window_keys(bucket: str, window: int, now: float) -> tuple[str, str]:
    current_window = int(now // window)
    return f"ratelimit:{bucket}:{current_window}", f"ratelimit:{bucket}:{current_window - 1}"


def _rate_limit_count(*, bucket: str, limit: int, window: int, now: float | None) -> RateDecision:
    now = time.time() if now is None else now
    current_key, previous_key = _window_keys(bucket, window, now)
    previous, current, client = _counts(current_key, previous_key, window * 2 + 1)
    return _decide(
        current_key=current_key,
        previous=previous,
        current=current,
        client=client,
        limit=limit,
        window=window,
        now=now,
    )


def _decide(
    *,
    current_key: str,
    previous: int,
    current: int,
    client: Any,
    limit: int,
    window: int,
    now: float,
) -> RateDecision:
    """Allow the request counted as ``current`` in its window, or give it back and refuse it."""
    elapsed = now - int(now // window) * window
    weight = (window - elapsed) / window
    estimated = previous * weight + current
    if estimated <= limit:
        return RateDecision(True, 0)
    _give_back(current_key, client)
    accepted = current - 1
    to_window_end = window - elapsed
    # Within this window a request fits once enough of the previous window has slid out:
    # previous * (window - elapsed - t) / window + accepted + 1 <= limit.
    if previous and current <= limit:
        wait = to_window_end - window * (limit - current) / previous
    else:
        wait = to_window_end
    if wait >= to_window_end:
        # Next window: accepted becomes "previous"; the request counts as the first of the new one.
        spill = window * (1 - (limit - 1) / accepted) if accepted > 0 else 0.0
        wait = to_window_end + max(0.0, spill)
    return RateDecision(False, max(1, math.ceil(wait)))


def _give_back(current_key: str, client: Any) -> None:
    if client is not None:
        client.decr(cache.make_key(current_key))
    else:
        with contextlib.suppress(ValueError):  # expired in between: nothing to give back
            cache.decr(current_key)


@dataclass
class PendingCount:
    """A request counted against its bucket ahead of the throttle check: the count travelled
    in the key lookup's Redis round trip (:func:`counted_cache_get`). The throttle decides on
    it (:meth:`decide`); a request refused before the throttle runs is given back
    (:meth:`give_back`), so only requests that reach the throttle count, as without it."""

    current_key: str
    previous: int
    current: int
    client: Any
    limit: int
    window: int
    now: float
    settled: bool = False

    def decide(self) -> RateDecision:
        self.settled = True
        try:
            return _decide(
                current_key=self.current_key,
                previous=self.previous,
                current=self.current,
                client=self.client,
                limit=self.limit,
                window=self.window,
                now=self.now,
            )
        except (RedisError, OSError) as exc:
            cache_breaker.trip(exc)
            return RateDecision(True, 0)

    def give_back(self) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            _give_back(self.current_key, self.client)
        except (RedisError, OSError) as exc:
            cache_breaker.trip(exc)


#: The key lookup's GET with the request's count, as one Redis command (a script run by its
#: SHA): KEYS the cached value, the previous window, the current window; ARGV the current
#: window's TTL. Returns the value, the previous window's count and the current one after this
#: request. A pipeline of the four commands cost the request about 1.5 times the client CPU.
_COUNTED_GET = """
local value = redis.call('get', KEYS[1])
local previous = redis.call('get', KEYS[2])
local current = redis.call('incr', KEYS[3])
redis.call('expire', KEYS[3], tonumber(ARGV[1]))
return {value, previous, current}
"""
_counted_get = LeanScript(_COUNTED_GET)


def counted_cache_get(
    *, cache_key: str, bucket: str, limit: int, window: int = DEFAULT_WINDOW_SECONDS
) -> tuple[Any, PendingCount | None]:
    """``cache.get(cache_key)``, and on Redis one request counted against ``bucket`` in the
    same round trip (one script: GET, GET, INCR and EXPIRE). Returns the value and the
    pending count (None when nothing was counted: no limit, not Redis, or the cache is
    failing open). Raises the cache's errors as ``cache.get`` does."""
    client = None if limit <= 0 or cache_breaker.is_open() else redis_client()
    if client is None:
        return cache.get(cache_key), None
    backend: Any = caches["default"]  # what ``cache`` stands for, looked up once
    make_key = backend.make_key
    now = time.time()
    current_key, previous_key = _window_keys(bucket, window, now)
    raw, previous, current = _counted_get(
        client,
        keys=[make_key(cache_key), make_key(previous_key), make_key(current_key)],
        args=[window * 2 + 1],
    )
    # The value as Django's Redis cache stores it (its serializer: ints plain, the rest pickled).
    value = None if raw is None else backend._cache._serializer.loads(raw)
    pending = PendingCount(
        current_key, int(previous or 0), int(current), client, limit, window, now
    )
    return value, pending


def pending_count_give_back(request: Any) -> None:
    """The request is refused before its throttle ran: give its pending count back."""
    pending = getattr(request, "pending_rate_count", None)
    if isinstance(pending, PendingCount):
        pending.give_back()


def api_key_bucket(key_hash: str) -> str:
    """The rate-limit bucket of the key whose hash is ``key_hash`` (known from the presented
    key before its row is, so the count can travel with the key lookup)."""
    return f"key:{key_hash[:24]}"


def api_rate_limit() -> int:
    return int(getattr(settings, "API_RATE_LIMIT", 600))


class ApiKeyRateThrottle(BaseThrottle):
    """DRF throttle: ``settings.API_RATE_LIMIT`` requests per minute per API key.

    Requests without a key never get here (authentication refuses them first).
    """

    def __init__(self) -> None:
        self._wait: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        pending = getattr(request, "pending_rate_count", None)
        if isinstance(pending, PendingCount) and not pending.settled:
            decision = pending.decide()  # counted with the key lookup (ApiKeyAuthentication)
        else:
            decision = rate_limit_hit(
                bucket=api_key_bucket(api_key.key_hash), limit=api_rate_limit()
            )
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
