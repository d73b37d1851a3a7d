"""Hot-path caches (issue 15): one Redis client per process, the rate limiter in one round trip,
banned words, prices and API keys cached with their changes seen at once."""

from __future__ import annotations

import re
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
    yield
    cache.clear()


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
