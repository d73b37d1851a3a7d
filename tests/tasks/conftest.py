from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from tests.integration_support import celery_worker, celery_worker_factory  # noqa: F401

from .helpers import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Freeze ``timezone.now`` for the services, the sweeper and the sandbox alike."""
    frozen = Clock(timezone.now())
    monkeypatch.setattr(timezone, "now", frozen)
    yield frozen


@pytest.fixture
def caller(organization: Any, live_key: Any) -> Any:
    from apps.tasks.services import Caller

    return Caller(organization=organization, api_key=live_key.api_key)
