"""Dashboard pages for members of the organization: what they show, what they change, and the
service errors they turn into messages."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from django.core import mail

from apps.accounts.models import Invitation, Membership, Organization, Role, User
from apps.accounts.services import invitation_create
from apps.api_keys.models import ApiKey, hash_key
from apps.billing.ledger import ledger_capture, ledger_hold
from apps.billing.models import CheckoutSession, TokenPackage
from apps.dashboard.selectors import spend_by_day
from apps.tasks.enums import Action, Status
from apps.tasks.models import BannedWord, Task
from apps.tasks.scheduling import dispatch_pending
from tests.billing.helpers import new_task, snapshot
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.tasks.helpers import png_data_url, sandbox_account

from .helpers import login

pytestmark = pytest.mark.django_db


def test_anonymous_is_sent_to_sign_in(client: Any) -> None:
    response = client.get("/create/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/create/"


def test_overview_shows_balance_plan_and_recent(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 50_000)
    running = new_task(organization, status=Status.IN_PROGRESS, prompt="a red fox")
    ledger_hold(task=running, amount=14_000)
    response = login(owner).get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="available-tokens">36,000<' in html
    assert 'data-testid="held-tokens">14,000<' in html
    assert 'data-testid="unfinished">1 of 3 unfinished tasks<' in html
    assert "a red fox" in html


def test_spend_by_day_sums_captures_per_day(organization: Organization, fund: Any) -> None:
    fund(organization, 100_000)
    for amount in (14_000, 3_500):
        task = new_task(organization, status=Status.SUCCESS)
        ledger_hold(task=task, amount=amount)
        ledger_capture(task=task)
    released = new_task(organization, status=Status.FAILURE)
    ledger_hold(task=released, amount=7_000)
    today = date.today()
    days = spend_by_day(organization=organization, days=3, today=today)
    assert [(d.day, d.tokens) for d in days] == [
        (today - timedelta(days=2), 0),
        (today - timedelta(days=1), 0),
        (today, 17_500),
    ]


def test_organization_switcher(owner: User, organization: Organization) -> None:
    second = OrganizationFactory(name="Second Org")
    MembershipFactory(user=owner, organization=second, role=Role.MEMBER)
    client = login(owner)
    assert client.get("/").context["request"].organization == organization
    response = client.post("/orgs/switch/", {"organization": second.pk, "next": "/tasks/1/"})
    assert response.status_code == 302
    assert response["Location"] == "/tasks/"
    assert client.get("/").context["request"].organization == second
    # Losing the membership takes effect on the next request, whatever the session says.
    Membership.objects.filter(user=owner, organization=second).delete()
    assert client.get("/").context["request"].organization == organization


def test_create_organization(owner: User) -> None:
    client = login(owner)
    response = client.post("/orgs/new/", {"name": "Side project"})
    assert response.status_code == 302
    created = Organization.objects.get(name="Side project")
    assert Membership.objects.get(user=owner, organization=created).role == Role.OWNER
    assert client.get("/").context["request"].organization == created


def test_create_submits_through_the_task_service(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 20_000)
    sandbox_account()
    response = login(owner).post(
        "/create/",
        {"action": "IMAGINE", "prompt": "a castle in the clouds", "mode": "FAST"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#task-feed"
    task = Task.objects.get(organization=organization)
    assert (task.action, task.mode, task.protocol, task.created_by_id, task.price) == (
        Action.IMAGINE,
        "FAST",
        "dashboard",
        owner.pk,
        14_000,
    )
    assert f'id="task-{task.pk}"' in response.content.decode()
    assert snapshot(organization)[:2] == (6_000, 14_000)


def test_create_with_reference_image_upload(
    owner: User, organization: Organization, fund: Any
) -> None:
    import base64

    from django.core.files.uploadedfile import SimpleUploadedFile

    fund(organization, 20_000)
    png = base64.b64decode(png_data_url().split(",", 1)[1])
    response = login(owner).post(
        "/create/",
        {
            "action": "IMAGINE",
            "prompt": "like this",
            "mode": "FAST",
            "images": [SimpleUploadedFile("ref.png", png, content_type="image/png")],
        },
    )
    task = Task.objects.get(organization=organization)
    assert response.status_code == 302
    assert response["Location"] == f"/tasks/{task.pk}/"
    assert len(task.inputs) == 1


def test_create_shows_service_errors_and_creates_nothing(
    owner: User, organization: Organization, fund: Any
) -> None:
    BannedWord.objects.create(word="forbidden")
    fund(organization, 20_000)
    before = snapshot(organization)
    client = login(owner)
    response = client.post(
        "/create/",
        {"action": "IMAGINE", "prompt": "a forbidden thing", "mode": "FAST"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#create-feedback"
    assert "The prompt contains the banned word &#x27;forbidden&#x27;." in response.content.decode()
    response = client.post("/create/", {"action": "IMAGINE", "prompt": "x" * 10, "mode": "TURBO"})
    assert response.status_code == 400
    assert (
        "Insufficient balance: 28000 tokens needed, 20000 available." in response.content.decode()
    )
    assert Task.objects.count() == 0
    assert snapshot(organization) == before


def test_follow_up_modal_and_cancel(owner: User, organization: Organization, fund: Any) -> None:
    fund(organization, 100_000)
    parent = new_task(
        organization,
        status=Status.SUCCESS,
        prompt="a cat",
        prompt_en="a cat",
        buttons=[{"custom_id": "MJ::CustomZoom::abc", "emoji": "🔍", "label": "Custom Zoom"}],
    )
    client = login(owner)
    response = client.post(
        f"/tasks/{parent.pk}/action/", {"custom_id": "MJ::CustomZoom::abc"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#modal-root"
    modal = Task.objects.get(parent=parent)
    assert modal.status == Status.MODAL
    assert "a cat --zoom 2" in response.content.decode()
    bad = client.post(
        f"/tasks/{modal.pk}/input/", {"prompt": "a cat --zoom 7"}, HTTP_HX_REQUEST="true"
    )
    assert bad.status_code == 400
    modal.refresh_from_db()
    assert modal.status == Status.MODAL
    response = client.post(
        f"/tasks/{modal.pk}/input/", {"prompt": "a cat --zoom 1.5"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Trigger-After-Swap"] == "dashboard:close-modal"
    modal.refresh_from_db()
    assert (modal.status, modal.params["zoom_factor"], modal.price) == (
        Status.NOT_START,
        1.5,
        14_000,
    )
    response = client.post(f"/tasks/{modal.pk}/cancel/")
    assert response.status_code == 302
    modal.refresh_from_db()
    assert modal.status == Status.CANCEL
    assert snapshot(organization)[:2] == (100_000, 0)


def test_create_in_test_mode_is_free_and_marked_test(
    owner: User, organization: Organization
) -> None:
    # No tokens at all: a live imagine is refused, a test one runs on the sandbox, free.
    before = snapshot(organization)
    client = login(owner)
    page = client.get("/create/?test=1").content.decode()
    assert 'name="test_mode" value="on" checked' in page
    assert 'name="test_mode" value="on" checked' not in client.get("/create/").content.decode()
    refused = client.post("/create/", {"action": "IMAGINE", "prompt": "a fox", "mode": "FAST"})
    assert refused.status_code == 400
    assert Task.objects.count() == 0
    response = client.post(
        "/create/",
        {"action": "IMAGINE", "prompt": "a fox", "mode": "FAST", "test_mode": "on"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    task = Task.objects.get(organization=organization)
    assert (task.is_test, task.price, task.protocol, task.created_by_id) == (
        True,
        0,
        "dashboard",
        owner.pk,
    )
    assert '<span class="badge warn">Test</span>' in response.content.decode()
    assert snapshot(organization) == before


def test_buttons_of_a_test_task_run_test_follow_ups(
    owner: User, organization: Organization
) -> None:
    """A test task (from a ``mjg_test_`` key or test mode) has working buttons in the dashboard."""
    before = snapshot(organization)
    parent = new_task(
        organization,
        status=Status.SUCCESS,
        is_test=True,
        prompt="a cat",
        prompt_en="a cat",
        buttons=[
            {"custom_id": "MJ::JOB::upsample::1::abc", "emoji": "", "label": "U1"},
            {"custom_id": "MJ::CustomZoom::abc", "emoji": "🔍", "label": "Custom Zoom"},
        ],
    )
    client = login(owner)
    response = client.post(
        f"/tasks/{parent.pk}/action/",
        {"custom_id": "MJ::JOB::upsample::1::abc"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content.decode()
    upscale = Task.objects.get(parent=parent, action=Action.UPSCALE)
    assert (upscale.is_test, upscale.price, upscale.status) == (True, 0, Status.NOT_START)
    dispatch_pending()  # what the dispatch message does on a worker
    upscale.refresh_from_db()
    assert upscale.status == Status.SUBMITTED
    response = client.post(
        f"/tasks/{parent.pk}/action/", {"custom_id": "MJ::CustomZoom::abc"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    modal = Task.objects.get(parent=parent, status=Status.MODAL)
    response = client.post(
        f"/tasks/{modal.pk}/input/", {"prompt": "a cat --zoom 1.5"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200, response.content.decode()
    modal.refresh_from_db()
    dispatch_pending()  # what the dispatch message does on a worker
    modal.refresh_from_db()
    assert (modal.is_test, modal.price, modal.status) == (True, 0, Status.SUBMITTED)
    assert snapshot(organization) == before


def test_follow_up_error_is_shown(owner: User, organization: Organization) -> None:
    parent = new_task(organization, status=Status.SUCCESS, buttons=[])
    response = login(owner).post(
        f"/tasks/{parent.pk}/action/",
        {"custom_id": "MJ::JOB::upsample::1::nope"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#toasts"
    assert "The parent task has no button" in response.content.decode()
    assert Task.objects.count() == 1


def test_history_filters_and_search(owner: User, organization: Organization) -> None:
    new_task(organization, status=Status.SUCCESS, prompt="red fox", action="IMAGINE")
    new_task(organization, status=Status.FAILURE, prompt="blue whale", action="IMAGINE")
    new_task(organization, status=Status.SUCCESS, prompt="red fox", action="UPSCALE", is_test=True)
    client = login(owner)

    def prompts(query: str) -> list[tuple[str, str]]:
        rows = client.get(f"/tasks/{query}").context["rows"]
        return sorted((task.prompt, task.action) for task, _, _ in rows)

    assert prompts("?q=fox") == [("red fox", "IMAGINE"), ("red fox", "UPSCALE")]
    assert prompts("?status=FAILURE") == [("blue whale", "IMAGINE")]
    assert prompts("?action=UPSCALE") == [("red fox", "UPSCALE")]
    assert prompts("?test=test") == [("red fox", "UPSCALE")]
    assert prompts("?test=live&q=fox") == [("red fox", "IMAGINE")]


def test_task_detail_lists_ledger_entries(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 20_000)
    task = new_task(organization, status=Status.SUCCESS, prompt="a boat")
    ledger_hold(task=task, amount=14_000)
    ledger_capture(task=task)
    response = login(owner).get(f"/tasks/{task.pk}/")
    assert response.status_code == 200
    assert [(e.kind, e.amount) for e in response.context["ledger"]] == [
        ("capture", 14_000),
        ("hold", 14_000),
    ]
    assert response.context["deliveries"] == []


def test_api_key_secret_is_shown_once(owner: User, organization: Organization) -> None:
    client = login(owner)
    response = client.post(
        "/keys/new/",
        {
            "name": "CI",
            "is_test": "on",
            "can_midjourney": "on",
            "allowed_ips": "203.0.113.7\n198.51.100.0/24",
            "expires_on": (date.today() + timedelta(days=30)).isoformat(),
        },
    )
    # Post/redirect/get: a reload of the result page does not create a second key.
    assert response.status_code == 302
    assert response["Location"] == "/keys/"
    response = client.get("/keys/")
    assert response["Cache-Control"] == "no-store"
    plaintext = response.context["issued"]["plaintext"]
    assert plaintext.startswith("mjg_test_")
    page = response.content.decode()
    assert plaintext in page
    # The examples carry the new key, for each of the three dialects.
    assert page.count(f"Bearer {plaintext}") >= 1
    assert f"mj-api-secret: {plaintext}" in page
    assert f"TT-API-KEY: {plaintext}" in page
    key = ApiKey.objects.get(organization=organization)
    assert (key.key_hash, key.is_test, key.can_read_billing, key.read_only) == (
        hash_key(plaintext),
        True,
        False,
        False,
    )
    assert key.allowed_ips == ["203.0.113.7/32", "198.51.100.0/24"]
    assert key.expires_at is not None
    assert plaintext not in client.get("/keys/").content.decode()
    assert client.post(f"/keys/{key.pk}/revoke/").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_api_key_errors_are_shown(owner: User, organization: Organization) -> None:
    response = login(owner).post("/keys/new/", {"name": "x", "allowed_ips": "not-an-ip"})
    assert response.status_code == 400
    assert "is not an IP address or CIDR network" in response.content.decode()
    assert ApiKey.objects.count() == 0


def test_api_key_allow_list_pasted_too_long_is_refused(owner: User) -> None:
    pasted = "\n".join(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(100_000))
    response = login(owner).post("/keys/new/", {"name": "x", "allowed_ips": pasted})
    assert response.status_code == 400
    assert "holds at most 100 addresses or networks (100000 given)" in (response.content.decode())
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/keys/"),
        ("post", "/keys/new/"),
        ("get", "/webhooks/"),
        ("post", "/team/invite/"),
        ("post", "/billing/buy/"),
    ],
)
def test_member_role_is_refused(
    member: User, organization: Organization, method: str, url: str
) -> None:
    response = getattr(login(member), method)(url, {"name": "x", "email": "a@example.com"})
    assert response.status_code == 403
    assert ApiKey.objects.count() == 0
    assert Invitation.objects.count() == 0


def test_buying_without_stripe_says_payments_are_unavailable(
    owner: User, organization: Organization, settings: Any
) -> None:
    settings.STRIPE_SECRET_KEY = ""
    package = TokenPackage.objects.create(name="Small", tokens=35_000, price_amount=100)
    client = login(owner)
    page = client.get("/billing/")
    assert 'data-testid="payments-unavailable"' in page.content.decode()
    response = client.post("/billing/buy/", {"package": package.pk}, follow=True)
    assert "Payments are not configured on this server" in response.content.decode()
    assert CheckoutSession.objects.count() == 0
    assert snapshot(organization)[:2] == (0, 0)


def test_invitation_flow(owner: User, organization: Organization, client: Any) -> None:
    owner_client = login(owner)
    response = owner_client.post("/team/invite/", {"email": "new@example.com", "role": "admin"})
    assert response.status_code == 302
    invitation = Invitation.objects.get(organization=organization)
    assert invitation.role == Role.ADMIN
    token = "no-such-token"
    assert client.get(f"/invitations/{token}/").status_code == 404

    from apps.accounts.services import invitation_create

    invitation.revoked_at = invitation.created_at
    invitation.save()
    _, token = invitation_create(actor=owner, organization=organization, email="new@example.com")
    anonymous = client.get(f"/invitations/{token}/")
    assert anonymous.status_code == 200
    assert "Create an account" in anonymous.content.decode()
    assert client.post(f"/invitations/{token}/").status_code == 200  # not signed in: no-op

    stranger = MembershipFactory(role=Role.OWNER).user
    refused = login(stranger).post(f"/invitations/{token}/")
    assert refused.status_code == 403
    assert "This invitation was sent to another e-mail address." in refused.content.decode()

    invitee = MembershipFactory(role=Role.OWNER, user__email="new@example.com").user
    invitee_client = login(invitee)
    accepted = invitee_client.post(f"/invitations/{token}/")
    assert accepted.status_code == 302
    assert Membership.objects.get(user=invitee, organization=organization).role == Role.MEMBER
    assert invitee_client.get("/").context["request"].organization == organization
    assert len(mail.outbox) == 0  # invitation e-mails go out on commit (see the browser test)


def test_describe_numbered_prompt_step(owner: User, organization: Organization, fund: Any) -> None:
    fund(organization, 50_000)
    parent = new_task(
        organization,
        status=Status.SUCCESS,
        action="DESCRIBE",
        properties={"prompts": ["first idea", "second idea", "third idea", "fourth idea"]},
        buttons=[
            {"custom_id": f"MJ::Job::PicReader::{n}", "emoji": "", "label": ""} for n in range(1, 5)
        ],
    )
    client = login(owner)
    page = client.get(f"/tasks/{parent.pk}/")
    assert page.context["prompts"] == [
        "first idea",
        "second idea",
        "third idea",
        "fourth idea",
    ]
    assert "Imagine prompt 2" in page.content.decode()
    response = client.post(
        f"/tasks/{parent.pk}/action/",
        {"custom_id": "MJ::Job::PicReader::2"},
        HTTP_HX_REQUEST="true",
    )
    assert response["HX-Retarget"] == "#modal-root"
    modal = Task.objects.get(parent=parent)
    assert (modal.status, modal.action, modal.prompt_en) == (
        Status.MODAL,
        Action.IMAGINE,
        "second idea",
    )
    assert "second idea</textarea>" in response.content.decode()
    client.post(f"/tasks/{modal.pk}/input/", {"prompt": "second idea, brighter"})
    modal.refresh_from_db()
    assert (modal.status, modal.prompt_en, modal.price) == (
        Status.NOT_START,
        "second idea, brighter",
        14_000,
    )


def test_webhook_resend_and_rotate(owner: User, organization: Organization, settings: Any) -> None:
    from apps.webhooks.models import WebhookDelivery, WebhookSecret
    from apps.webhooks.services import endpoint_create, endpoint_send_test_event

    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    created = endpoint_create(organization=organization, url="http://127.0.0.1:9/hook")
    delivery = endpoint_send_test_event(organization=organization, endpoint_id=created.endpoint.pk)
    client = login(owner)
    page = client.get("/webhooks/")
    assert page.context["secret"] == created.secret
    assert client.post(f"/webhooks/deliveries/{delivery.pk}/resend/").status_code == 302
    # Still pending (never attempted here): the resend brings that attempt forward, no new row.
    assert WebhookDelivery.objects.filter(event=delivery.event).count() == 1
    delivery.refresh_from_db()
    assert delivery.state == "pending"
    assert client.post("/webhooks/secret/rotate/").status_code == 302
    assert client.get("/webhooks/").context["secret"] != created.secret
    assert WebhookSecret.objects.filter(organization=organization).count() == 2


def test_polling_stops_on_terminal_tasks(owner: User, organization: Organization) -> None:
    running = new_task(organization, status=Status.IN_PROGRESS, progress=40)
    done = new_task(organization, status=Status.SUCCESS)
    failed = new_task(organization, status=Status.FAILURE, fail_reason="upstream said no")
    client = login(owner)
    card = client.get(f"/tasks/{running.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in card
    for task in (done, failed):
        card = client.get(f"/tasks/{task.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
        assert "hx-trigger" not in card and "hx-get" not in card


def test_a_polling_card_whose_task_is_out_of_view_stops_polling(
    owner: User, organization: Organization
) -> None:
    other = OrganizationFactory()
    MembershipFactory(user=owner, organization=other, role=Role.OWNER)
    task = new_task(organization, status=Status.IN_PROGRESS, prompt="our prompt")
    client = login(owner)
    client.post("/orgs/switch/", {"organization": other.pk})  # in another tab
    for task_id in (task.pk, "1999999999999999"):
        response = client.get(f"/tasks/{task_id}/card/", HTTP_HX_REQUEST="true")
        # 286 is htmx's "stop polling"; the card is replaced, no error toast every second.
        assert response.status_code == 286
        body = response.content.decode()
        assert "This task is not in the current organization." in body
        assert "hx-trigger" not in body and "our prompt" not in body
        assert "HX-Retarget" not in response
    # A plain request still answers 404.
    assert client.get(f"/tasks/{task.pk}/card/").status_code == 404


def test_htmx_requests_after_the_session_ended_navigate_to_sign_in(
    client: Any, organization: Organization
) -> None:
    task = new_task(organization, status=Status.IN_PROGRESS)
    response = client.get(
        f"/tasks/{task.pk}/card/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/create/?test=1",
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response["HX-Redirect"] == "/accounts/login/?next=/create/%3Ftest%3D1"
    # A current URL on another host is not trusted as the place to come back to.
    response = client.get(
        f"/tasks/{task.pk}/card/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="https://evil.example/phish",
    )
    assert response["HX-Redirect"] == "/accounts/login/?next=/"
    assert client.get("/create/")["Location"] == "/accounts/login/?next=/create/"


def test_an_invitation_to_a_disabled_organization_is_refused_with_nothing_written(
    organization: Organization, owner: User
) -> None:
    _invitation, token = invitation_create(
        actor=owner, organization=organization, email="new@example.com", role=Role.ADMIN
    )
    Organization.objects.filter(pk=organization.pk).update(is_active=False)
    invitee = UserFactory(email="new@example.com")
    response = login(invitee, raise_request_exception=False).post(f"/invitations/{token}/")
    assert response.status_code == 409
    assert "has been disabled, so its invitations cannot be accepted" in (response.content.decode())
    assert not Membership.objects.filter(user=invitee, organization=organization).exists()
    assert Invitation.objects.get().accepted_at is None
