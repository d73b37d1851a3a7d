from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import django.test.client
import pytest
import rest_framework.test
from django.conf import settings
from django.core.cache import cache
from django.test.client import ClientHandler
from rest_framework.test import APIClient, ForceAuthClientHandler

from apps.accounts.models import Organization, Role, User
from apps.api_keys.services import IssuedKey, api_key_create
from apps.billing.ledger import ledger_topup
from apps.core.cache import config_cache_clear
from apps.core.handlers import ListedMiddleware, api_middleware, is_lean_path
from apps.core.messaging import broker_breaker_reset
from apps.core.ratelimit import cache_breaker
from apps.tasks.models import BannedWord
from apps.tasks.selectors import pool_throughput_forget

from .factories import MembershipFactory, OrganizationFactory
from .reference_data import ensure_reference_data


def _path_routed(base: type[ClientHandler]) -> type[ClientHandler]:
    """``base`` (a test client's handler) routing requests as production's WSGI application
    does (apps/core/handlers.py): API paths through the short API middleware chain."""

    class ApiChain(ListedMiddleware, base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.middleware = api_middleware()
            super().__init__(*args, **kwargs)

    class PathRouted(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.api_chain = ApiChain(*args, **kwargs)

        def __call__(self, environ: dict[str, Any]) -> Any:
            if not is_lean_path(environ.get("PATH_INFO", "")):
                return super().__call__(environ)
            for name in ("_force_user", "_force_token"):  # APIClient.force_authenticate
                if hasattr(self, name):
                    setattr(self.api_chain, name, getattr(self, name))
            return self.api_chain(environ)

    PathRouted.__name__ = PathRouted.__qualname__ = f"PathRouted{base.__name__}"
    return PathRouted


# Every test client (Django's and DRF's) serves API paths the way production does.
django.test.client.ClientHandler = _path_routed(ClientHandler)  # type: ignore[misc]
rest_framework.test.ForceAuthClientHandler = _path_routed(  # type: ignore[misc, assignment]
    ForceAuthClientHandler
)


#: Tests with these marks are slow by nature (real worker or server subprocesses, a browser):
#: they are marked ``slow`` here, so a new one never has to remember. Other long tests (the
#: schema fuzzing, many-thread races) carry ``pytest.mark.slow`` themselves.
SLOW_BY_NATURE = ("integration", "browser")


# First: the marks must be on the items before ``-m "not slow"`` deselects by them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_BY_NATURE):
            item.add_marker(pytest.mark.slow)
    if getattr(settings, "TESTS_ON_POSTGRES", False):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set TEST_DATABASE_URL or run PostgreSQL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _uses_database(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("django_db") is not None or any(
        name in names for name in ("db", "transactional_db", "live_server")
    )


@pytest.fixture(scope="session", autouse=True)
def _reference_data_on_reused_db(request: pytest.FixtureRequest, django_db_blocker: Any) -> None:
    """With --reuse-db the database may come from a run whose last transactional test flushed
    it; put the migration-seeded rows back once before any test runs."""
    # Without a database test pytest-django sets up no test database, and the connection would
    # still point at the real one.
    if not any(_uses_database(item) for item in request.session.items):
        return
    request.getfixturevalue("django_db_setup")
    with django_db_blocker.unblock():
        ensure_reference_data()


@pytest.fixture(autouse=True)
def _reference_data(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the database; put back the rows migrations seeded."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    if transactional:
        request.getfixturevalue("transactional_db")
        ensure_reference_data()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Each test starts with no cached API keys, prices or banned words: rows a rolled-back
    test cached must not answer for the next one."""
    cache.clear()
    config_cache_clear()
    pool_throughput_forget()


@pytest.fixture(autouse=True)
def _empty_banned_word_list(request: pytest.FixtureRequest) -> None:
    """Tests start with no banned words: a fresh install's default list (seeded by a
    migration, and present or not on a reused database depending on earlier flushes) must not
    decide whether a test's prompt is accepted. Tests that need words create them."""
    if not _uses_database(request.node):
        return
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    BannedWord.objects.all().delete()


@pytest.fixture(autouse=True)
def _closed_breakers() -> Iterator[None]:
    """Each test starts with the broker and cache breakers closed: a test that took the broker
    or the cache down must not make the next test's messages silently skipped."""
    broker_breaker_reset()
    cache_breaker.reset()
    yield
    broker_breaker_reset()
    cache_breaker.reset()


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    settings.MEDIA_ROOT = tmp_path_factory.getbasetemp() / "media"


@pytest.fixture
def organization(db: None) -> Organization:
    return OrganizationFactory(name="Acme")


@pytest.fixture
def other_organization(db: None) -> Organization:
    return OrganizationFactory(name="Other Corp")


@pytest.fixture
def owner(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.OWNER).user


@pytest.fixture
def admin_user(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.ADMIN).user


@pytest.fixture
def member(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.MEMBER).user


@pytest.fixture
def outsider(other_organization: Organization) -> User:
    """A user who belongs to another organization only."""
    return MembershipFactory(organization=other_organization, role=Role.OWNER).user


@pytest.fixture
def make_key(db: None) -> Callable[..., IssuedKey]:
    def make(organization: Organization, **flags: Any) -> IssuedKey:
        flags.setdefault("name", "test key")
        return api_key_create(organization=organization, **flags)

    return make


@pytest.fixture
def live_key(organization: Organization, make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key(organization)


@pytest.fixture
def test_mode_key(organization: Organization, make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key(organization, is_test=True)


@pytest.fixture
def outsider_key(other_organization: Organization, make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key(other_organization)


@pytest.fixture
def fund() -> Callable[[Organization, int], None]:
    counter = {"n": 0}

    def fund(organization: Organization, tokens: int) -> None:
        counter["n"] += 1
        ledger_topup(
            organization=organization, amount=tokens, idempotency_key=f"test-fund-{counter['n']}"
        )

    return fund


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def key_client(live_key: IssuedKey) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return client
