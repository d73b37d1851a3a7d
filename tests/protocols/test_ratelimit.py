"""Per-key request rate limits: 429 with Retry-After in each dialect's shape."""

from __future__ import annotations

import pytest

from apps.core.ratelimit import rate_limit_hit

pytestmark = pytest.mark.django_db


def _native(body):
    assert body["error"]["code"] == "throttled"
    assert body["error"]["message"].startswith("Request was throttled.")


def _mjproxy(body):
    assert (body["code"], body["result"], body["properties"]) == (4, None, {})
    assert body["description"].startswith("Too many requests for this API key; retry in ")


def _ttapi(body):
    assert (body["status"], body["data"]) == ("FAILED", None)
    assert body["message"].startswith("Too many requests for this API key; retry in ")


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/api/v1/tasks", _native),
        ("/mj/task/list", _mjproxy),
        ("/midjourney/v1/fetch?jobId=1", _ttapi),
    ],
)
def test_over_the_limit_is_429_with_retry_after(
    settings, live_key, make_key, organization, client_for, path, check
):
    settings.API_RATE_LIMIT = 3
    client = client_for(live_key)
    for _ in range(3):
        assert client.get(path).status_code in (200, 404)
    refused = client.get(path)
    assert refused.status_code == 429
    # At most the rest of this window plus the part of the next one it still weighs on.
    assert 1 <= int(refused["Retry-After"]) <= 2 * 60 + 1
    check(refused.json())
    # Another key of the same organization has its own allowance.
    assert client_for(make_key(organization)).get(path).status_code in (200, 404)


def test_sliding_window_arithmetic():
    for n in range(5):
        assert rate_limit_hit(bucket="t", limit=5, window=60, now=1000 * 60 + n).allowed
    refused = rate_limit_hit(bucket="t", limit=5, window=60, now=1000 * 60 + 10)
    assert not refused.allowed
    assert refused.retry_after == 50 + 12  # next window, plus the previous one sliding out
    # Half-way into the next window half of the previous count (2.5) still weighs in.
    assert rate_limit_hit(bucket="t", limit=5, window=60, now=1001 * 60 + 30).allowed
    assert rate_limit_hit(bucket="t", limit=5, window=60, now=1001 * 60 + 31).allowed
    late = rate_limit_hit(bucket="t", limit=5, window=60, now=1001 * 60 + 32)
    assert (late.allowed, late.retry_after) == (False, 4)
    assert rate_limit_hit(bucket="t", limit=5, window=60, now=1001 * 60 + 36).allowed
