"""Web-surface security review: account e-mails link to PUBLIC_BASE_URL whatever Host a request
names (no reset-link poisoning), and guards of what the review found sound (the organization
switch's redirect, the dashboard's security headers)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client

from apps.accounts.models import Organization, Role, User
from apps.accounts.provisioning import email_mark_verified
from apps.accounts.services import user_create
from tests.factories import MembershipFactory

from .helpers import login

pytestmark = pytest.mark.django_db

PASSWORD = "a-Long-enough-pass-9876"
EVIL = "evil.example"
LINK = re.compile(r"https?://\S+")


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Any:
    # allauth counts resets, sign-ups and confirmation mails per address in the cache.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def any_host(settings: Any) -> Any:
    """A deployment whose ALLOWED_HOSTS lets any Host through (``*``, common behind a load
    balancer that probes by address): the Host header is then the attacker's to choose."""
    settings.ALLOWED_HOSTS = ["*"]
    settings.PUBLIC_BASE_URL = "https://mjgate.example.com"
    return settings


@pytest.fixture
def alice() -> User:
    user = user_create(email="alice@example.com", password=PASSWORD)
    email_mark_verified(user=user)
    return user


def _mail_to(address: str) -> str:
    bodies = [m.body for m in mail.outbox if address in m.to]
    assert len(bodies) == 1, [m.subject for m in mail.outbox]
    return bodies[0]


def _links_are_public(body: str) -> list[str]:
    links = LINK.findall(body)
    assert links, body
    assert EVIL not in body
    assert all(link.startswith("https://mjgate.example.com/") for link in links), links
    return links


def test_a_password_reset_link_never_points_at_the_host_the_request_named(
    any_host: Any, alice: User
) -> None:
    # The attacker asks for the victim's reset from a request naming their own host; the
    # mailed link (the reset key) must still lead to the product, not to them.
    response = Client().post(
        "/accounts/password/reset/", {"email": "alice@example.com"}, HTTP_HOST=EVIL
    )
    assert response.status_code == 302
    (link,) = _links_are_public(_mail_to("alice@example.com"))
    assert "/accounts/password/reset/key/" in link
    # The link is the working reset link, on the product's address.
    opened = Client().get(link.removeprefix("https://mjgate.example.com"), secure=True)
    assert opened.status_code == 302
    assert opened["Location"].endswith("-set-password/")


def test_a_verification_link_never_points_at_the_host_the_request_named(any_host: Any) -> None:
    response = Client().post(
        "/accounts/signup/",
        {"email": "bob@example.com", "password1": PASSWORD, "password2": PASSWORD},
        HTTP_HOST=EVIL,
    )
    assert response.status_code == 302
    (link,) = _links_are_public(_mail_to("bob@example.com"))
    assert "/accounts/confirm-email/" in link


def test_mails_to_unknown_and_taken_addresses_link_to_the_product(
    any_host: Any, alice: User
) -> None:
    # A stranger can make us mail any address with sign-up and reset links: never theirs.
    Client().post("/accounts/password/reset/", {"email": "nobody@example.com"}, HTTP_HOST=EVIL)
    Client().post(
        "/accounts/signup/",
        {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD},
        HTTP_HOST=EVIL,
    )
    assert _links_are_public(_mail_to("nobody@example.com"))
    assert _links_are_public(_mail_to("alice@example.com"))


# --- Guards: found sound by the review ---------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["\\evil.example", "/\\evil.example", "//evil.example", "https://evil.example/"]
)
def test_switching_organization_never_redirects_off_site(
    owner: User, other_organization: Organization, target: str
) -> None:
    MembershipFactory(organization=other_organization, user=owner, role=Role.MEMBER)
    response = login(owner).post(
        "/orgs/switch/", {"organization": other_organization.pk, "next": target}
    )
    assert response.status_code == 302
    location = response["Location"]
    # A path on this site: not protocol-relative, and no backslash a browser reads as "/".
    assert location.startswith("/") and not location.startswith("//"), location
    assert "\\" not in location


def test_dashboard_pages_refuse_framing_and_keep_the_referrer_on_site(owner: User) -> None:
    response = login(owner).get("/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    # Invitation and password-reset links carry their token in the path.
    assert response["Referrer-Policy"] == "same-origin"
