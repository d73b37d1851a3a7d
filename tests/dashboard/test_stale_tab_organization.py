"""A tab left open on one organization's page after another tab switched organization: its
writes are refused (409) and change nothing, instead of landing in the organization the
session has now. Every page says which organization it was rendered for (a hidden field in
each POST form, a header on htmx requests); a write that does not say is refused too.

These tests use a plain test client (not ``helpers.login``, which acts like a fresh tab) and
take the field and the header from the pages as rendered, as a browser would."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, reverse

from apps.accounts.models import Invitation, Membership, MembershipTier, Organization, Role, User
from apps.accounts.services import invitation_create
from apps.api_keys.models import ApiKey
from apps.billing.models import CheckoutSession, TokenPackage
from apps.dashboard import urls as dashboard_urls
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import endpoint_send_test_event
from tests.billing.helpers import new_task, snapshot
from tests.billing.stripe_fakes import FakeStripe
from tests.factories import MembershipFactory, OrganizationFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db

FIELD = "page_organization"


@dataclass(frozen=True)
class Write:
    """One organization-scoped write of the dashboard, as its page submits it."""

    page: str
    action: str
    data: dict[str, Any]
    made: Callable[[Organization], int]  # how many of what it makes the organization has
    done: Callable[[Any], bool]  # the answer of a write that went through


def _redirect_to(prefix: str) -> Callable[[Any], bool]:
    return lambda response: response.status_code == 302 and response["Location"].startswith(prefix)


WRITES = {
    "api key": Write(
        page="/keys/",
        action="/keys/new/",
        data={"name": "stale tab key", "flag_midjourney": "on"},
        made=lambda org: ApiKey.objects.filter(organization=org).count(),
        done=_redirect_to("/keys/"),
    ),
    "webhook endpoint": Write(
        page="/webhooks/",
        action="/webhooks/endpoints/new/",
        data={"url": "http://127.0.0.1:9/in"},
        made=lambda org: WebhookEndpoint.objects.filter(organization=org).count(),
        done=_redirect_to("/webhooks/"),
    ),
    "invitation": Write(
        page="/team/",
        action="/team/invite/",
        data={"email": "new.colleague@example.com", "role": Role.ADMIN},
        made=lambda org: Invitation.objects.filter(organization=org).count(),
        done=_redirect_to("/team/"),
    ),
    "upstream account": Write(
        page="/upstream-accounts/",
        action="/upstream-accounts/new/",
        data={
            "name": "proxy one",
            "engine": "mjproxy",
            "modes": ["FAST"],
            "concurrency": "3",
            "base_url": "https://mj.example.com",
            "secret": "stale-tab-secret",
        },
        made=lambda org: UpstreamAccount.objects.filter(owner=org).count(),
        done=_redirect_to("/upstream-accounts/"),
    ),
    "task": Write(
        page="/create/",
        action="/create/",
        data={"action": "IMAGINE", "prompt": "a lighthouse at dusk", "mode": "FAST"},
        made=lambda org: Task.objects.filter(organization=org).count(),
        done=_redirect_to("/tasks/"),
    ),
    "token purchase": Write(
        page="/billing/",
        action="/billing/buy/",
        data={},  # the package is added by the fixture (its id)
        made=lambda org: CheckoutSession.objects.filter(organization=org).count(),
        done=_redirect_to("https://checkout.stripe.test/"),
    ),
}


@pytest.fixture
def fake_stripe(settings: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake_key"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_TIMEOUT = 5.0
    yield fake
    fake.stop()


@pytest.fixture
def two(
    organization: Organization, owner: User, fund: Any, fake_stripe: FakeStripe, settings: Any
) -> Any:
    """The owner of Acme (first, so a new session starts there) also owns Bravo; both can do
    every write above (a plan with own upstream accounts, tokens, a package on sale)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # an endpoint on loopback, no DNS
    bravo = OrganizationFactory(name="Bravo Ltd")
    MembershipFactory(user=owner, organization=bravo, role=Role.OWNER)
    premium = MembershipTier.objects.get(code="PREMIUM")
    for org in (organization, bravo):
        org.tier = premium
        org.save(update_fields=["tier"])
        fund(org, 100_000)
    package = TokenPackage.objects.create(name="Small", tokens=35_000, price_amount=100)
    return organization, bravo, package


def _tab(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


class _Forms(HTMLParser):
    """The POST forms of a page: action → its hidden page_organization values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[str]]] = []
        self._open: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and (found.get("method") or "").lower() == "post":
            self._open = (found.get("action") or "", [])
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and found.get("name") == FIELD:
            self._open[1].append(found.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def post_forms(html: str) -> list[tuple[str, list[str]]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def rendered_for(client: Client, write: Write) -> tuple[str, str]:
    """Open the write's page as a browser tab would: the organization its form says it is
    for, and the one its htmx header says."""
    page = client.get(write.page)
    assert page.status_code == 200, write.page
    html = page.content.decode()
    (field,) = next(values for action, values in post_forms(html) if action == write.action)
    body = re.search(r"<body hx-headers='([^']*)'", html)
    assert body is not None
    return field, json.loads(body.group(1))["X-Page-Organization"]


def data_of(write: Write, package: TokenPackage, **extra: str) -> dict[str, Any]:
    data = dict(write.data)
    if write.action == "/billing/buy/":
        data["package"] = package.pk
    return {**data, **extra}


def everything(acme: Organization, bravo: Organization) -> tuple[Any, ...]:
    return (
        tuple(write.made(org) for write in WRITES.values() for org in (acme, bravo)),
        snapshot(acme),
        snapshot(bravo),
    )


@pytest.mark.parametrize("name", list(WRITES))
@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_a_write_from_a_tab_of_the_previous_organization_is_refused_and_changes_nothing(
    name: str, htmx: bool, owner: User, two: Any, fake_stripe: FakeStripe
) -> None:
    acme, bravo, package = two
    write = WRITES[name]
    tab = _tab(owner)
    field, header = rendered_for(tab, write)
    assert field == header == str(acme.pk)
    # In another tab (the same session, so the same client), the owner switches to Bravo.
    assert tab.post("/orgs/switch/", {"organization": bravo.pk}).status_code == 302
    before = everything(acme, bravo)

    # As a browser sends them: where the page is, and for htmx the header.
    came_from = f"http://testserver{write.page}"
    extra: dict[str, Any] = (
        {
            "HTTP_HX_REQUEST": "true",
            "HTTP_HX_CURRENT_URL": came_from,
            "HTTP_X_PAGE_ORGANIZATION": header,
        }
        if htmx
        else {"HTTP_REFERER": came_from}
    )
    response = tab.post(write.action, data_of(write, package, **{FIELD: field}), **extra)

    assert response.status_code == 409, response.content[:500]
    text = response.content.decode()
    assert (
        "This page was for organization Acme, but you have since switched to Bravo Ltd in "
        "another tab. Reload the page to continue."
    ) in text
    assert f'href="{write.page}">Continue in Bravo Ltd</a>' in text
    if htmx:
        # A toast where the user is looking, whatever element the request targeted.
        assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#toasts", "beforeend")
        assert 'role="alert"' in text and "<html" not in text
    else:
        # A whole page that offers both ways on, in the current organization or back.
        assert "<html" in text and "Nothing was changed" in text
        switch_back = [values for action, values in post_forms(text) if action == "/orgs/switch/"]
        assert len(switch_back) == 2  # the sidebar's switcher and "Switch back to Acme"
        assert f'name="organization" value="{acme.pk}"' in text
        assert "Switch back to Acme" in text
    assert everything(acme, bravo) == before
    assert fake_stripe.requests == []  # no Checkout Session was asked of Stripe


@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_from_a_page_of_the_current_organization_goes_through(
    name: str, owner: User, two: Any
) -> None:
    acme, bravo, package = two
    write = WRITES[name]
    tab = _tab(owner)
    tab.post("/orgs/switch/", {"organization": bravo.pk})
    field, header = rendered_for(tab, write)  # the page opened (or reloaded) after the switch
    assert field == header == str(bravo.pk)
    before_acme = write.made(acme)

    response = tab.post(write.action, data_of(write, package, **{FIELD: field}))

    assert write.done(response), (response.status_code, response.content[:500])
    assert write.made(bravo) == 1
    assert write.made(acme) == before_acme == 0


@pytest.mark.parametrize("name", list(WRITES))
@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_a_write_that_does_not_say_its_organization_is_refused(
    name: str, htmx: bool, owner: User, two: Any
) -> None:
    acme, bravo, package = two
    write = WRITES[name]
    tab = _tab(owner)
    rendered_for(tab, write)
    before = everything(acme, bravo)

    extra: dict[str, Any] = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = tab.post(write.action, data_of(write, package), **extra)

    assert response.status_code == 400, response.content[:500]
    assert "This page did not say which organization it was for, so nothing was changed." in (
        response.content.decode()
    )
    assert ("HX-Retarget" in response) is htmx
    assert everything(acme, bravo) == before


def test_the_field_and_the_header_must_both_name_the_current_organization(
    owner: User, two: Any
) -> None:
    """An htmx form sends both; one naming another organization is enough to refuse."""
    acme, bravo, _package = two
    tab = _tab(owner)
    for field, header in ((acme.pk, bravo.pk), (bravo.pk, acme.pk)):
        response = tab.post(
            "/keys/new/",
            {"name": "mixed", FIELD: field},
            HTTP_HX_REQUEST="true",
            HTTP_X_PAGE_ORGANIZATION=str(header),
        )
        assert response.status_code == 409
    assert not ApiKey.objects.exists()


def test_an_organization_the_user_is_not_in_is_not_named(
    owner: User, two: Any, other_organization: Organization
) -> None:
    """A typed id of another tenant (or junk) is refused without telling its name."""
    tab = _tab(owner)
    for claimed in (str(other_organization.pk), "not-a-number"):
        response = tab.post(
            "/team/invite/", {"email": "x@example.com", "role": "member", FIELD: claimed}
        )
        assert response.status_code == 409
        text = response.content.decode()
        assert "This page was for another organization; you are now working in Acme." in text
        assert other_organization.name not in text
        assert "Switch back" not in text
    assert not Invitation.objects.exists()


def test_switching_back_from_the_refusal_lets_the_write_be_done_where_it_was_meant(
    owner: User, two: Any
) -> None:
    acme, bravo, _package = two
    tab = _tab(owner)
    field, _ = rendered_for(tab, WRITES["api key"])
    tab.post("/orgs/switch/", {"organization": bravo.pk})
    refused = tab.post(
        "/keys/new/",
        {"name": "meant for acme", FIELD: field},
        HTTP_REFERER="http://testserver/keys/",
    )
    assert refused.status_code == 409
    assert '<a class="btn primary" href="/keys/">Continue in Bravo Ltd</a>' in (
        refused.content.decode()
    )
    back = tab.post("/orgs/switch/", {"organization": acme.pk, "next": "/keys/"})
    assert back["Location"] == "/keys/"
    again = tab.post("/keys/new/", {"name": "meant for acme", FIELD: field})
    assert again.status_code == 302
    assert ApiKey.objects.get(name="meant for acme").organization_id == acme.pk


def test_every_post_form_on_every_page_says_its_organization(owner: User, two: Any) -> None:
    """So no form of the dashboard is refused for want of the field (a form that forgot it
    would fail closed, refused every time)."""
    _acme, bravo, _package = two
    tab = _tab(owner)
    tab.post("/orgs/switch/", {"organization": bravo.pk})
    colleague = MembershipFactory(organization=bravo, role=Role.MEMBER)
    tab.post("/team/invite/", {"email": "x@example.com", "role": "member", FIELD: bravo.pk})
    tab.post("/keys/new/", {"name": "k", FIELD: bravo.pk})
    endpoint = WebhookEndpoint.objects.create(organization=bravo, url="https://e.example")
    delivery = endpoint_send_test_event(organization=bravo, endpoint_id=endpoint.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state=DeliveryState.DEAD)
    account = UpstreamAccountFactory(name="ours", owner=bravo)
    done = new_task(
        bravo,
        status=Status.SUCCESS,
        prompt="a cat",
        prompt_en="a cat",
        buttons=[{"custom_id": "MJ::JOB::upsample::1::abc", "emoji": "", "label": "U1"}],
    )
    running = new_task(bravo, status=Status.IN_PROGRESS)
    pages = [
        "/",
        "/create/",
        "/keys/",
        "/webhooks/",
        "/team/",
        "/upstream-accounts/",
        f"/upstream-accounts/{account.pk}/",
        "/billing/",
        "/settings/",
        f"/tasks/{done.pk}/",
        f"/tasks/{running.pk}/",
    ]
    scoped: set[str] = set()
    for path in pages:
        response = tab.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert f'"X-Page-Organization": "{bravo.pk}"' in html, path
        for action, values in post_forms(html):
            if action in ("/orgs/switch/", "/accounts/logout/"):
                assert values == [], (path, action)
                continue
            assert values == [str(bravo.pk)], (path, action)
            scoped.add(re.sub(r"\d+", "N", action))
    # The forms seen cover every kind of organization-scoped write the pages offer.
    assert {
        "/create/",
        "/keys/new/",
        "/keys/N/revoke/",
        "/webhooks/endpoints/new/",
        "/webhooks/endpoints/N/toggle/",
        "/webhooks/endpoints/N/delete/",
        "/webhooks/endpoints/N/test/",
        "/webhooks/deliveries/N/resend/",
        "/webhooks/secret/rotate/",
        "/team/invite/",
        "/team/invitations/N/revoke/",
        "/team/members/N/role/",
        "/team/members/N/remove/",
        "/upstream-accounts/new/",
        "/upstream-accounts/N/",
        "/upstream-accounts/N/toggle/",
        "/upstream-accounts/N/delete/",
        "/billing/buy/",
        "/settings/translation/",
        "/tasks/N/action/",
        "/tasks/N/cancel/",
    } <= scoped, scoped
    assert colleague.user.email in tab.get("/team/").content.decode()
    # The htmx fragments (a polling card, a second step's dialog) carry it too.
    card = tab.get(f"/tasks/{running.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert [values for _, values in post_forms(card)] == [[str(bravo.pk)]]


def test_what_acts_for_no_current_organization_works_from_any_tab(owner: User, two: Any) -> None:
    """Switching organization, creating one, accepting an invitation and signing out say
    nothing about a current organization, so a tab of any organization may do them."""
    acme, bravo, _package = two
    stale = _tab(owner)  # no field, no header: a page of whichever organization
    assert stale.post("/orgs/switch/", {"organization": bravo.pk}).status_code == 302
    assert (
        stale.post("/orgs/switch/", {"organization": acme.pk, FIELD: bravo.pk}).status_code == 302
    )
    assert rendered_for(stale, WRITES["api key"]) == (str(acme.pk), str(acme.pk))
    created = stale.post("/orgs/new/", {"name": "Charlie Inc", FIELD: acme.pk})
    assert created.status_code == 302
    assert Organization.objects.filter(name="Charlie Inc").exists()
    third = OrganizationFactory(name="Delta")
    delta_owner = MembershipFactory(organization=third, role=Role.OWNER).user
    _invitation, token = invitation_create(
        actor=delta_owner, organization=third, email=owner.email, role=Role.MEMBER
    )
    accepted = stale.post(f"/invitations/{token}/", {FIELD: acme.pk})
    assert accepted.status_code == 302
    assert Membership.objects.filter(user=owner, organization=third).exists()
    assert stale.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in stale.session


#: The dashboard's views that act for no current organization (README, apps/dashboard/tenancy.py).
NOT_ORGANIZATION_SCOPED = {"organization-switch", "organization-new", "invitation"}


def test_every_dashboard_url_refuses_a_write_that_does_not_say_its_organization(
    owner: User, organization: Organization
) -> None:
    """Walked from the URL list, so a view added later is covered: every one that takes a
    write refuses it without the field (before looking up anything the URL names); the rest
    take no writes at all."""
    tab = _tab(owner)
    answers: dict[str, int] = {}
    for pattern in dashboard_urls.urlpatterns:
        assert isinstance(pattern, URLPattern) and pattern.name
        if pattern.name in NOT_ORGANIZATION_SCOPED:
            continue
        kwargs = dict.fromkeys(pattern.pattern.regex.groupindex, "1")
        response = tab.post(reverse(f"dashboard:{pattern.name}", kwargs=kwargs), {})
        answers[pattern.name] = response.status_code
        if response.status_code == 400:
            assert "This page did not say which organization it was for" in (
                response.content.decode()
            ), pattern.name
    # GET-only views (405); all the others take writes, and refuse this one.
    reads = {"status", "gallery", "history", "task-detail", "task-card", "task-download"}
    reads |= {"keys", "webhooks", "upstream-accounts", "billing", "settings", "team", "mailbox"}
    assert {name for name, status in answers.items() if status == 405} == reads
    writes = {name: status for name, status in answers.items() if name not in reads}
    assert set(writes.values()) == {400}, writes
    assert len(writes) == 26, writes
