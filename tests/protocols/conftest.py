from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.accounts.models import Organization
from apps.api_keys.services import IssuedKey
from apps.billing.selectors import balance_get
from apps.engines.models import UpstreamAccount
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import UpstreamAccountFactory
from tests.integration_support import celery_worker, celery_worker_factory  # noqa: F401
from tests.tasks.helpers import run_to_completion, sandbox_account


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Rate-limit windows live in the cache; every test starts with none."""
    cache.clear()


@pytest.fixture
def client_for() -> Callable[[IssuedKey], APIClient]:
    def make(issued: IssuedKey) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_MJ_API_SECRET=issued.plaintext)
        return client

    return make


@pytest.fixture
def funded(organization: Organization, fund: Callable[[Organization, int], None]) -> Organization:
    fund(organization, 1_000_000)
    return organization


@pytest.fixture
def sandbox(db: None) -> UpstreamAccount:
    """A sandbox account whose jobs finish at once; also the test-key pool, made instant."""
    if not UpstreamAccount.objects.filter(name=SANDBOX_POOL_NAME).exists():
        UpstreamAccountFactory(sandbox_pool=True)
    return sandbox_account()


@pytest.fixture
def finished_imagine(
    funded: Organization, live_key: IssuedKey, sandbox: UpstreamAccount
) -> Callable[..., Task]:
    """A successful IMAGINE of the organization, made through the service."""

    def make(protocol: str = "mjproxy", prompt: str = "a red fox", **kwargs: Any) -> Task:
        caller = Caller(organization=funded, api_key=live_key.api_key, protocol=protocol)
        outcome = task_submit(caller=caller, action="IMAGINE", prompt=prompt, **kwargs)
        return run_to_completion(outcome.task.pk)

    return make


def snapshot(organization: Organization) -> tuple[int, int, int]:
    """(available, held, tasks): what a refused request must leave unchanged."""
    balance = balance_get(organization=organization)
    return balance.available, balance.held, Task.objects.filter(organization=organization).count()
