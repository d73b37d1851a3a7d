"""Per-key request rate limits for every public API dialect (SPEC §6.3).

A sliding-window counter in the Django cache (Redis in production): the count of the current
fixed window plus the previous window's count weighted by how much of it still overlaps the
sliding window. Two atomic ``incr`` operations per request, no read-modify-write race, and a
burst at a window boundary cannot double the allowance as it can with plain fixed windows.

Each dialect maps :class:`rest_framework.exceptions.Throttled` (raised by DRF when
:class:`ApiKeyRateThrottle` refuses) to its own error shape, always with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps.api_keys.models import ApiKey

DEFAULT_WINDOW_SECONDS = 60


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


def rate_limit_hit(
    *, bucket: str, limit: int, window: int = DEFAULT_WINDOW_SECONDS, now: float | None = None
) -> RateDecision:
    """Count one request against ``bucket``; refuse it when more than ``limit`` per ``window``.

    A refused request is not counted, so a client that keeps retrying too early is not locked
    out for longer than its own excess.
    """
    if limit <= 0:
        return RateDecision(True, 0)
    now = time.time() if now is None else now
    current_window = int(now // window)
    elapsed = now - current_window * window
    current_key = f"ratelimit:{bucket}:{current_window}"
    previous = int(cache.get(f"ratelimit:{bucket}:{current_window - 1}") or 0)
    current = _incr(current_key, window * 2 + 1)
    weight = (window - elapsed) / window
    estimated = previous * weight + current
    if estimated <= limit:
        return RateDecision(True, 0)
    with contextlib.suppress(ValueError):  # expired in between: nothing to give back
        cache.decr(current_key)
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
        decision = rate_limit_hit(
            bucket=f"key:{api_key.pk}:{api_key.prefix}", limit=api_rate_limit()
        )
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
