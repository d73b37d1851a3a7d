from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from apps.accounts.models import Organization
from tests.fakes.mjproxy_server import FakeMjproxy


@pytest.fixture(autouse=True)
def _mjproxy_settings(settings: Any) -> None:
    # Unit tests drive one poll step at a time: every step asks the upstream afresh unless a
    # test turns the batch cache on. Short timeouts keep the failure paths fast.
    settings.MJPROXY_POLL_CACHE_SECONDS = 0
    settings.MJPROXY_HTTP_TIMEOUT = 5
    settings.MJPROXY_CONNECT_TIMEOUT = 2
    cache.clear()


@pytest.fixture
def fake() -> Iterator[FakeMjproxy]:
    server = FakeMjproxy(secret="upstream-secret", duration=None).start()
    yield server
    server.stop()


@pytest.fixture
def funded(organization: Organization, fund: Any) -> Organization:
    fund(organization, 1_000_000)
    return organization


from tests.integration_support import celery_worker_factory  # noqa: E402, F401
