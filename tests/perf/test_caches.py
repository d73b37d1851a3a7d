"""Hot-path caches (issue 15): one Redis client per process, the rate limiter in one round trip,
banned words, prices and API keys cached with their changes seen at once."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.accounts.models import Organization
from apps.api_keys.services import IssuedKey, api_key_revoke
from apps.billing.models import Price
from apps.billing.selectors import price_get
from apps.core import ratelimit
from apps.core.cache import ProcessRedisCache, redis_client
from apps.tasks.models import BannedWord
from apps.tasks.selectors import banned_words_active


@pytest.fixture
def redis_cache(settings: Any) -> Iterator[None]:
    url = getattr(django_settings, "TEST_REDIS_URL", "") or "redis://127.0.0.1:6379/0"
    url = re.sub(r"/\d+$", "", url) + "/12"
    settings.CACHES = {
        "default": {
            "BACKEND": "apps.core.cache.ProcessRedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "mjgate-submit-tests",
        }
    }
    ratelimit.cache_breaker.reset()
    cache.clear()
    _clear_of_the_minute_end()
    yield
    cache.clear()


def _clear_of_the_minute_end(margin: float = 10.0) -> None:
    """Wait for the next minute when fewer than ``margin`` seconds of this one are left.

    The API's rate limit counts in fixed one-minute windows of the wall clock, and the tests
    read the current window's count (``_window_count``) after a few requests: a minute ending
    between a request and the reading would put them in different windows."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def test_one_redis_client_per_process(redis_cache: None) -> None:
    again = ProcessRedisCache(
        django_settings.CACHES["default"]["LOCATION"],
        {"KEY_PREFIX": "mjgate-submit-tests"},
    )
    assert caches["default"]._cache is again._cache  # type: ignore[attr-defined]
    shared = again._cache.get_client(write=True).connection_pool
    assert redis_client().connection_pool is shared


def test_the_rate_limiter_on_redis_counts_refuses_and_gives_back(redis_cache: None) -> None:
    now = 1_000_000 * 60.0 + 1
    assert ratelimit.rate_limit_hit(bucket="b", limit=2, now=now).allowed
    assert ratelimit.rate_limit_hit(bucket="b", limit=2, now=now).allowed
    refused = ratelimit.rate_limit_hit(bucket="b", limit=2, now=now)
    assert not refused.allowed and refused.retry_after >= 1
    # The refused request was given back: the window holds the two accepted ones.
    assert cache.get(f"ratelimit:b:{int(now // 60)}") == 2
    # The previous window weighs in on the next one.
    later = now + 60
    assert ratelimit.rate_limit_hit(bucket="b", limit=2, now=later).allowed is False


@pytest.mark.django_db
def test_banned_words_are_cached_and_a_change_is_seen_at_once() -> None:
    banned_words_active()
    with CaptureQueriesContext(connection) as ctx:
        assert "gore" not in banned_words_active()
    assert not ctx.captured_queries
    word = BannedWord.objects.create(word="gore")
    assert "gore" in banned_words_active()
    word.is_active = False
    word.save()
    assert "gore" not in banned_words_active()


@pytest.mark.django_db
def test_prices_are_cached_and_a_change_is_seen_at_once() -> None:
    price = Price.objects.get(action="IMAGINE", mode="FAST")
    assert price_get(action="IMAGINE", mode="FAST") == price.tokens
    with CaptureQueriesContext(connection) as ctx:
        price_get(action="IMAGINE", mode="FAST")
    assert not ctx.captured_queries
    price.tokens += 1
    price.save()
    assert price_get(action="IMAGINE", mode="FAST") == price.tokens


@pytest.mark.django_db
def test_a_cached_key_is_refused_at_once_when_revoked(
    live_key: IssuedKey, key_client: APIClient
) -> None:
    cache.clear()  # the key's creation left a tombstone
    assert key_client.get("/mj/task/list").status_code in (200, 405)
    with CaptureQueriesContext(connection) as ctx:
        key_client.get("/mj/task/list")
    assert not [q for q in ctx.captured_queries if "api_keys_apikey" in q["sql"]]
    api_key_revoke(api_key=live_key.api_key)
    refused = key_client.get("/mj/task/list")
    assert refused.status_code == 401
    assert "revoked" in refused.content.decode()


@pytest.mark.django_db
def test_a_cached_key_of_a_disabled_organization_is_refused_at_once(
    organization: Organization, live_key: IssuedKey, key_client: APIClient
) -> None:
    cache.clear()
    assert key_client.get("/mj/task/list").status_code in (200, 405)
    organization.is_active = False
    organization.save()
    assert key_client.get("/mj/task/list").status_code == 401


@pytest.mark.django_db
def test_bulk_changes_of_cached_tables_are_seen_at_once() -> None:
    BannedWord.objects.create(word="gore")
    assert "gore" in banned_words_active()
    BannedWord.objects.filter(word="gore").update(is_active=False)
    assert "gore" not in banned_words_active()
    before = price_get(action="IMAGINE", mode="FAST")
    Price.objects.filter(action="IMAGINE", mode="FAST").update(tokens=before + 5)
    assert price_get(action="IMAGINE", mode="FAST") == before + 5


class _RoundTrips:
    """Counts the Redis round trips of the process: the client's single commands and pipelines,
    and the hot path's scripts on their own connections."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import redis.client

        from apps.core.cache import LeanScript

        self.count = 0
        for cls, name in (
            (redis.client.Redis, "execute_command"),
            (redis.client.Pipeline, "execute"),
            (LeanScript, "_run"),
        ):
            original = getattr(cls, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.count += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, name, counted)


def _window_count(key_hash: str) -> int:
    bucket = ratelimit.api_key_bucket(key_hash)
    return int(cache.get(f"ratelimit:{bucket}:{int(time.time() // 60)}") or 0)


@pytest.mark.django_db
def test_the_key_lookup_and_the_rate_count_are_one_redis_round_trip(
    redis_cache: None, settings: Any, live_key: IssuedKey, key_client: APIClient, monkeypatch: Any
) -> None:
    settings.API_RATE_LIMIT = 100
    cache.clear()
    assert key_client.get("/mj/task/list").status_code == 200  # caches the key
    trips = _RoundTrips(monkeypatch)
    assert key_client.get("/mj/task/list").status_code == 200
    assert trips.count == 1
    assert _window_count(live_key.api_key.key_hash) == 2


@pytest.mark.django_db
def test_on_redis_over_the_limit_is_429_and_refusals_are_not_counted(
    redis_cache: None,
    settings: Any,
    organization: Organization,
    live_key: IssuedKey,
    key_client: APIClient,
    make_key: Any,
) -> None:
    settings.API_RATE_LIMIT = 2
    for _ in range(2):
        assert key_client.get("/mj/task/list").status_code == 200
    refused = key_client.get("/mj/task/list")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert _window_count(live_key.api_key.key_hash) == 2  # the refused one was given back
    # Refused by a permission (a read-only key submitting): not counted either.
    read_only = make_key(organization, read_only=True)
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=read_only.plaintext)
    assert client.post("/api/v1/tasks", {"prompt": "a cat"}, format="json").status_code == 403
    assert _window_count(read_only.api_key.key_hash) == 0
    assert client.get("/api/v1/tasks").status_code == 200
    assert _window_count(read_only.api_key.key_hash) == 1
    # A revoked key is refused at once, and not counted.
    api_key_revoke(api_key=read_only.api_key)
    assert client.get("/api/v1/tasks").status_code == 401
    assert _window_count(read_only.api_key.key_hash) == 1
