"""The Content-Security-Policy of the HTML pages (apps/core/csp.py), and pages that live with it.

The header is on the dashboard's, the account pages' and the admin's HTML with exactly the
directives the settings give (plus where result files are served from), and on no JSON answer.
Every dashboard page, as an owner sees it with something on it, and the account pages are
scanned for what the policy would block: inline ``<script>``, event-handler attributes,
``hx-on``, ``style`` attributes and ``<style>`` blocks, ``javascript:`` URLs. The browser tests
(test_browser_*.py, which fail on any CSP violation reported in the console) show the pages
still work under it.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import URLPattern

from apps.accounts.models import MembershipTier, Role, User
from apps.accounts.services import invitation_create
from apps.billing.models import TokenPackage
from apps.dashboard import urls as dashboard_urls
from apps.tasks.enums import Action
from tests.factories import (
    MembershipFactory,
    OrganizationFactory,
    TaskFactory,
    UpstreamAccountFactory,
    UserFactory,
)

from .helpers import login
from .seed import Tenant, seed_deliveries, seed_tenant

pytestmark = pytest.mark.django_db

HEADER = "Content-Security-Policy"
PUBLIC = "https://mjgate.example.com"
EXPECTED = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", PUBLIC],
    "media-src": ["'self'", PUBLIC],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"],
    "frame-ancestors": ["'none'"],
}
#: The admin's: the same, but Django's change list and the operator's meters style inline.
EXPECTED_ADMIN = {**EXPECTED, "style-src": ["'self'", "'unsafe-inline'"]}


def directives(response: Any) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in response[HEADER].split(";"):
        words = part.split()
        assert words and words[0] not in parsed, response[HEADER]
        parsed[words[0]] = words[1:]
    return parsed


@pytest.fixture(autouse=True)
def public_base_url(settings: Any) -> None:
    settings.PUBLIC_BASE_URL = PUBLIC


# --- The header ----------------------------------------------------------------------------


def test_dashboard_and_account_pages_carry_the_policy(owner: User) -> None:
    client = login(owner)
    for path, status in (
        ("/", 200),
        ("/create/", 200),
        ("/billing/", 200),
        ("/keys/", 200),
        ("/accounts/email/", 200),
        ("/accounts/2fa/", 200),
        ("/tasks/no-such-task/", 404),
    ):
        response = client.get(path)
        assert response.status_code == status, path
        assert response["Content-Type"].startswith("text/html"), path
        assert directives(response) == EXPECTED, path


def test_pages_for_visitors_carry_the_policy(client: Client) -> None:
    for path, status in (
        ("/accounts/login/", 200),
        ("/accounts/signup/", 200),
        ("/accounts/password/reset/", 200),
        ("/status/", 200),
        ("/no-such-page/", 404),
        ("/", 302),  # the way to the sign-in page
    ):
        response = client.get(path)
        assert response.status_code == status, path
        assert directives(response) == EXPECTED, path


def test_the_admin_may_style_inline_but_never_run_inline_script(client: Client) -> None:
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    for path in ("/admin/", "/admin/tasks/task/", "/admin/accounts/organization/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert directives(response) == EXPECTED_ADMIN, path


def test_json_answers_and_the_api_docs_carry_no_policy(client: Client) -> None:
    api = client.get("/api/v1/tasks")
    assert api.status_code == 401 and api["Content-Type"].startswith("application/json")
    assert HEADER not in api
    compat = client.get("/mj/task/list")
    assert compat["Content-Type"].startswith("application/json") and HEADER not in compat
    # Swagger UI (drf-spectacular) starts itself with an inline script: exempt by name.
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and docs["Content-Type"].startswith("text/html")
    assert HEADER not in docs


def test_djangos_debug_error_pages_are_left_alone(client: Client, settings: Any) -> None:
    """Under DEBUG, Django's own error pages (inline style and script) stay readable; the
    dashboard's pages keep the policy."""
    settings.DEBUG = True
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404
    assert "Using the URLconf defined in" in missing.content.decode()  # Django's debug page
    assert HEADER not in missing
    assert directives(client.get("/accounts/login/")) == EXPECTED


def test_result_files_served_from_another_origin_may_be_shown(owner: User, settings: Any) -> None:
    """Results on S3 or a CDN: the storage's own origin joins img-src and media-src."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {
                "location": str(settings.MEDIA_ROOT),
                "base_url": "https://media.example.net/results-bucket/",
            },
        },
    }
    response = login(owner).get("/")
    assert directives(response) == {
        **EXPECTED,
        "img-src": ["'self'", "data:", PUBLIC, "https://media.example.net"],
        "media-src": ["'self'", PUBLIC, "https://media.example.net"],
    }


def test_a_changed_policy_setting_counts_at_once(owner: User, settings: Any) -> None:
    settings.CONTENT_SECURITY_POLICY = {**settings.CONTENT_SECURITY_POLICY, "img-src": ["'self'"]}
    response = login(owner).get("/")
    assert directives(response)["img-src"] == ["'self'", PUBLIC]


def test_htmx_runs_without_eval_script_tags_or_its_inline_indicator_style(owner: User) -> None:
    page = login(owner).get("/").content.decode()
    finder = InlineCode()
    finder.feed(page)
    (config,) = finder.htmx_config
    assert (
        config["allowEval"],
        config["allowScriptTags"],
        config["includeIndicatorStyles"],
    ) == (False, False, False)


# --- What the policy would block, on every page ----------------------------------------------


class InlineCode(HTMLParser):
    """Collects what a ``script-src 'self'; style-src 'self'`` policy refuses to run or apply."""

    #: Script types a browser does not run (data blocks), which the policy does not govern.
    DATA_TYPES = frozenset({"application/json", "application/ld+json"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.htmx_config: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        where = f"<{tag} {' '.join(name for name, _ in attrs)}>"
        kind = values.get("type", "").strip().lower()
        if tag == "script" and "src" not in values and kind not in self.DATA_TYPES:
            self.found.append(f"inline script {where}")
        if tag == "style":
            self.found.append(f"style block {where}")
        if tag == "meta" and values.get("name") == "htmx-config":
            self.htmx_config.append(json.loads(values["content"]))
        for name, value in values.items():
            bare = name.removeprefix("data-")
            if name == "style":
                self.found.append(f"style attribute {where}: {value!r}")
            elif bare.startswith(("on", "hx-on")):
                self.found.append(f"event handler {name}= {where}")
            elif value.strip().lower().startswith(("javascript:", "js:")):
                self.found.append(f"script URL {name}={value!r} {where}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def inline_code(html: str) -> list[str]:
    finder = InlineCode()
    finder.feed(html)
    finder.close()
    return finder.found


def test_the_scanner_finds_what_the_policy_blocks() -> None:
    """The scan below can fail: each kind of inline code is found, data blocks are not."""
    html = (
        "<script>alert(1)</script><script src='/static/x.js'></script>"
        '<script type="application/json" id="d">{}</script>'
        "<style>p{color:red}</style><p style='color:red'>x</p>"
        "<button onclick=\"go()\">b</button><form hx-on::after-request='x()'></form>"
        "<div data-hx-on:click='y()'></div><a href=' JavaScript:alert(1)'>a</a>"
        "<div hx-vals='js:{a: 1}'></div><img src='/i.png' alt='' />"
    )
    assert inline_code(html) == [
        "inline script <script >",
        "style block <style >",
        "style attribute <p style>: 'color:red'",
        "event handler onclick= <button onclick>",
        "event handler hx-on::after-request= <form hx-on::after-request>",
        "event handler data-hx-on:click= <div data-hx-on:click>",
        "script URL href=' JavaScript:alert(1)' <a href>",
        "script URL hx-vals='js:{a: 1}' <div hx-vals>",
    ]


@pytest.fixture
def world(settings: Any, tmp_path: Path) -> dict[str, Any]:
    """One owner's organization with something on every page (see tests/dashboard/seed.py)."""
    settings.EMAIL_BACKEND = "apps.dashboard.mailbox.MailboxBackend"
    settings.MAILBOX_DIR = str(tmp_path / "mailbox")
    tenant: Tenant = seed_tenant()
    organization = tenant.organization
    organization.tier = MembershipTier.objects.get(code="PREMIUM")  # own upstream accounts
    organization.save(update_fields=["tier"])
    seed_deliveries(organization, tenant.imagine)
    invitation, token = invitation_create(
        actor=tenant.user, organization=organization, email="grace@example.com"
    )
    member = MembershipFactory(organization=organization, role=Role.MEMBER).user
    common = {"organization": organization, "created_by": tenant.user}
    waiting = TaskFactory(
        modal=True, parent=tenant.upscale, prompt="a lighthouse on a cliff at dawn", **common
    )
    running = TaskFactory(running=True, progress=40, prompt="a fox in the snow", **common)
    queued = TaskFactory(queued=True, prompt="a heron at dusk", **common)
    video = TaskFactory(
        succeeded=True,
        action=Action.VIDEO,
        parent=tenant.upscale,
        prompt="slow waves",
        result={
            **tenant.upscale.result,
            "videos": ["results/csp/video-1.mp4", "results/csp/video-2.mp4"],
        },
        **common,
    )
    account = UpstreamAccountFactory(name="own proxy", owner=organization)
    TokenPackage.objects.create(name="Starter", tokens=350_000, price_amount=1_000, currency="cny")
    # A mail in the local mailbox, with a link, as sign-up sends one.
    mail.send_mail(
        "Please confirm",
        f"Open {PUBLIC}/accounts/confirm-email/abc/ now.",
        None,
        [tenant.user.email],
    )
    assert len(list((tmp_path / "mailbox").glob("*.eml"))) == 1
    return {
        "tenant": tenant,
        "member": member,
        "token": token,
        "invitation": invitation,
        "waiting": waiting,
        "running": running,
        "queued": queued,
        "video": video,
        "account": account,
    }


#: Dashboard routes that only take a POST: their refusals re-render pages scanned below.
POST_ONLY = {
    "task-action",
    "task-cancel",
    "key-create",
    "key-revoke",
    "webhook-endpoint-create",
    "webhook-endpoint-toggle",
    "webhook-endpoint-delete",
    "webhook-endpoint-test",
    "webhook-delivery-resend",
    "webhook-secret-rotate",
    "upstream-account-create",
    "upstream-account-toggle",
    "upstream-account-delete",
    "billing-buy",
    "billing-upgrade",
    "billing-portal",
    "settings-translation",
    "team-invite",
    "team-invitation-revoke",
    "team-member-role",
    "team-member-remove",
    "organization-switch",
    #: A file (image or video), not a page.
    "task-download",
}
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_no_dashboard_or_account_page_carries_inline_script_or_style(
    world: dict[str, Any],
) -> None:
    tenant = world["tenant"]
    pk = tenant.imagine.pk
    owner = login(tenant.user)
    # name of the dashboard route -> the requests that render its templates
    pages: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "overview": [("/", {})],
        "status": [("/status/", {})],
        "create": [("/create/", {})],
        "gallery": [("/gallery/", {})],
        "history": [("/tasks/", {}), ("/tasks/?status=FAILURE&action=IMAGINE", {})],
        "task-detail": [
            (f"/tasks/{task.pk}/", {})
            for task in (
                tenant.imagine,
                tenant.upscale,
                tenant.failed,
                world["running"],
                world["waiting"],
                world["video"],
            )
        ],
        "task-card": [
            (f"/tasks/{task.pk}/card/", HTMX)
            for task in (world["running"], world["queued"], world["video"], tenant.imagine)
        ],
        "task-input": [
            (f"/tasks/{world['waiting'].pk}/input/", {}),
            (f"/tasks/{world['waiting'].pk}/input/", HTMX),
        ],
        "task-editor": [
            (f"/tasks/{tenant.upscale.pk}/editor/?kind=edit", HTMX),
            (f"/tasks/{tenant.upscale.pk}/editor/?kind=retexture", HTMX),
            (f"/tasks/{tenant.upscale.pk}/editor/?kind=edit", {}),
        ],
        "keys": [("/keys/", {})],
        "webhooks": [("/webhooks/", {})],
        "upstream-accounts": [("/upstream-accounts/", {})],
        "upstream-account-edit": [(f"/upstream-accounts/{world['account'].pk}/", {})],
        "billing": [("/billing/", {}), ("/billing/?checkout=success", {})],
        "settings": [("/settings/", {})],
        "team": [("/team/", {})],
        "organization-new": [("/orgs/new/", {})],
        "invitation": [(f"/invitations/{world['token']}/", {})],
        "mailbox": [("/dev/mailbox/", {})],
    }
    names = {p.name for p in dashboard_urls.urlpatterns if isinstance(p, URLPattern)}
    # A new page must be added above (or to POST_ONLY): this scan covers every route.
    assert names == set(pages) | POST_ONLY

    problems: list[str] = []

    def scan(response: Any, label: str, status: int = 200) -> None:
        assert response.status_code == status, (label, response.status_code)
        problems.extend(f"{label}: {found}" for found in inline_code(response.content.decode()))

    for name, requests in pages.items():
        for path, extra in requests:
            scan(owner.get(path, **extra), f"{name} {path}")

    # Pages a refusal renders: a form's errors, a wrong task, a wrong role, a stale tab, a bad URL.
    scan(owner.post("/keys/new/", {"name": ""}), "key-create refused", 400)
    scan(
        owner.post("/keys/new/", {"name": "CSP key", "can_midjourney": "on"}, follow=True),
        "key issued",
    )
    scan(owner.post("/webhooks/endpoints/new/", {"url": "ftp://x"}), "webhook refused", 400)
    scan(owner.post("/team/invite/", {"email": "not-an-address"}), "invite refused", 400)
    scan(owner.post("/create/", {"action": "IMAGINE", "prompt": ""}), "create refused", 400)
    scan(
        owner.post("/create/", {"action": "IMAGINE", "prompt": ""}, **HTMX),
        "create refused htmx",
        400,
    )
    scan(owner.get(f"/tasks/{pk}x/"), "404 page", 404)
    scan(login(world["member"]).get("/keys/"), "403 page", 403)
    # A form from a page of another organization than the one the session is on now.
    elsewhere = OrganizationFactory(name="Bravo Ltd")
    MembershipFactory(user=tenant.user, organization=elsewhere, role=Role.OWNER)
    stale = Client()
    stale.force_login(tenant.user)
    current = re.search(
        r'name="page_organization" value="(\d+)"', stale.get("/keys/").content.decode()
    )
    assert current is not None
    other = {tenant.organization.pk, elsewhere.pk} - {int(current.group(1))}
    refused = stale.post(
        "/keys/new/",
        {"name": "stale", "page_organization": other.pop()},
        HTTP_REFERER="http://testserver/keys/",
    )
    scan(refused, "stale page", 409)
    scan(owner.get("/tasks/a%00b/"), "400 page", 400)
    # The account pages (allauth) in the dashboard's look, signed in and out.
    for path in (
        "/accounts/email/",
        "/accounts/password/change/",
        "/accounts/2fa/",
        "/accounts/2fa/totp/activate/",
    ):
        scan(owner.get(path, follow=True), path)
    visitor = Client()
    for path in (
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/password/reset/",
        "/accounts/confirm-email/nope/",
    ):
        scan(visitor.get(path), path)

    assert not problems, "\n".join(problems)
