"""A key's revocation against requests that read the key before it (apps/api_keys/services.py).

A revocation takes effect with the next request, whatever a request that read the key earlier
does afterwards: an edit of the key saved from its older copy, or a cache fill that stalls past
the revocation's tombstone. Each test forces its interleaving with threads, ``threading.Event``
and one monkeypatched seam, on real PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection

from apps.api_keys import services as key_services
from apps.api_keys.models import ApiKey
from apps.api_keys.services import (
    ApiKeyRejected,
    api_key_authenticate,
    api_key_revoke,
    api_key_update_by_key,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 10


def _thread(work: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_key_update_racing_a_revocation_does_not_unrevoke_the_key(
    organization, make_key, monkeypatch
):
    """PATCH /api/v1/keys/{id} (``api_key_update_by_key``) loads the key and checks it is not
    revoked; a revocation commits before the edit is saved. The edit is refused (the key's row
    is locked and read again), and the revocation stands: before, ``save()`` wrote every column
    from the older copy, ``revoked_at = NULL`` included, and the key worked again."""
    target = make_key(organization)
    caller = make_key(organization)
    loaded = threading.Event()
    revoked = threading.Event()
    real_check = key_services._check_delegation

    def paused_check(**kwargs: Any) -> None:
        real_check(**kwargs)
        loaded.set()  # the PATCH has its copy and passed the is_revoked check
        assert revoked.wait(WAIT)

    monkeypatch.setattr(key_services, "_check_delegation", paused_check)

    # What KeyDetailView.patch does: the key as api_key_get reads it, then the update.
    stale = ApiKey.objects.select_related("organization__tier").get(pk=target.api_key.pk)
    caller_key = ApiKey.objects.select_related("organization__tier").get(pk=caller.api_key.pk)
    errors: list[BaseException] = []
    patch = _thread(
        lambda: api_key_update_by_key(caller=caller_key, api_key=stale, name="renamed"), errors
    )
    assert loaded.wait(WAIT)
    # The owner revokes the key (DELETE /api/v1/keys/{id}, dashboard, admin): committed.
    api_key_revoke(api_key=ApiKey.objects.get(pk=target.api_key.pk))
    assert ApiKey.objects.get(pk=target.api_key.pk).revoked_at is not None
    revoked.set()
    patch.join(WAIT)
    assert [str(e) for e in errors] == ["A revoked API key cannot be changed."]
    assert ApiKey.objects.get(pk=target.api_key.pk).name != "renamed"

    cache.clear()  # past the tombstone and cache lifetimes: the row decides
    assert ApiKey.objects.get(pk=target.api_key.pk).revoked_at is not None, (
        "the PATCH's stale save wrote revoked_at = NULL over the committed revocation"
    )
    with pytest.raises(ApiKeyRejected):
        api_key_authenticate(raw_key=target.plaintext, client_ip="127.0.0.1")


@pytest.fixture(params=["memory", "redis"])
def key_cache(request: Any, settings: Any) -> Any:
    """The key cache on this process's memory (the tests' and the embedded run's) or on Redis
    (every deployment with ``REDIS_URL``): a database of its own, a prefix per test process."""
    if request.param == "redis":
        from django.conf import settings as django_settings

        from apps.core import ratelimit

        url = getattr(django_settings, "TEST_REDIS_URL", "") or "redis://127.0.0.1:6379/0"
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        settings.CACHES = {
            "default": {
                "BACKEND": "apps.core.cache.ProcessRedisCache",
                "LOCATION": re.sub(r"/\d+$", "", url) + "/11",
                "KEY_PREFIX": f"mjgate-key-races-{worker}",
            }
        }
        ratelimit.cache_breaker.reset()
    return request.param


def test_a_cache_fill_stalled_past_the_tombstone_cannot_restore_a_revoked_key(
    organization, make_key, monkeypatch, key_cache
):
    """A request misses the key cache, reads the key (not yet revoked) from the database and
    stalls before it fills the cache (GC pause, CPU starvation) a little longer than
    TOMBSTONE_SECONDS. The revocation commits meanwhile; its tombstone has expired when the add
    runs, so the add puts the unrevoked copy back for KEY_CACHE_SECONDS and the revoked key is
    accepted by every following request for up to 30 s. The fill is now refused: the key's
    generation changed since the reader read it (``_fill``)."""
    monkeypatch.setattr(key_services, "TOMBSTONE_SECONDS", 1)  # the stall outlives it sooner
    issued = make_key(organization)
    # Past the creation's own tombstone: the next request fills the cache.
    cache.delete(key_services._key_cache_key(issued.api_key.prefix))
    reached, go = threading.Event(), threading.Event()
    fill = key_services._fill

    def stalled_fill(*args: Any) -> None:
        reached.set()
        assert go.wait(WAIT)
        fill(*args)

    monkeypatch.setattr(key_services, "_fill", stalled_fill)
    errors: list[BaseException] = []
    reader = _thread(
        lambda: api_key_authenticate(raw_key=issued.plaintext, client_ip="127.0.0.1"), errors
    )
    assert reached.wait(WAIT)  # the reader holds the pre-revocation rows
    monkeypatch.setattr(key_services, "_fill", fill)  # only the reader's fill is held
    api_key_revoke(api_key=ApiKey.objects.get(pk=issued.api_key.pk))  # committed
    with pytest.raises(ApiKeyRejected):  # the tombstone works while it lives
        api_key_authenticate(raw_key=issued.plaintext, client_ip="127.0.0.1")
    threading.Event().wait(key_services.TOMBSTONE_SECONDS + 0.5)
    go.set()
    reader.join(WAIT)
    assert errors == []
    assert cache.get(key_services._key_cache_key(issued.api_key.prefix)) is None  # not filled
    with pytest.raises(ApiKeyRejected):
        api_key_authenticate(raw_key=issued.plaintext, client_ip="127.0.0.1")


def test_a_fill_with_no_change_in_between_is_cached(organization, make_key, key_cache):
    """The guard refuses only a fill that a change overtook: an ordinary miss still caches the
    key, so the next request needs no database read."""
    issued = make_key(organization)
    cache.delete(key_services._key_cache_key(issued.api_key.prefix))
    api_key_authenticate(raw_key=issued.plaintext, client_ip="127.0.0.1")
    cached = cache.get(key_services._key_cache_key(issued.api_key.prefix))
    assert [key.pk for key in cached] == [issued.api_key.pk]
