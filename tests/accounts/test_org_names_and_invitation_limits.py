"""Organization names are one line of text, invitation e-mails never answer 500 nor leave a
half-made invitation, and invitation e-mails are limited per organization, per inviter and per
invited address (a security review: header injection through a name, and unlimited mail from
our domain with a subject the sender chose)."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Invitation, Membership, Organization, Role, User
from apps.accounts.services import (
    InvitationNotSent,
    InvitationRateLimited,
    invitation_create,
    invitation_revoke,
    organization_create,
    organization_rename,
    user_create,
    user_onboard,
)
from apps.core.errors import ValidationFailed
from apps.core.text import control_character, single_line
from apps.tasks.prompt import parse_prompt
from tests.dashboard.helpers import login
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

from .admin_forms import form_data

pytestmark = pytest.mark.django_db

INJECTED = "Acme\nBcc: x@evil.example"

REFUSED_CHARACTERS = [
    ("\n", "a line break (U+000A)"),
    ("\r", "a line break (U+000D)"),
    ("\u2028", "a line break (U+2028)"),
    ("\u2029", "a line break (U+2029)"),
    ("\x00", "a control character (U+0000)"),
    ("\t", "a control character (U+0009)"),
    ("\x07", "a control character (U+0007)"),
    ("\x1b", "a control character (U+001B)"),
    ("\x7f", "a control character (U+007F)"),
    ("\x85", "a control character (U+0085)"),
]


class RefusingBackend(BaseEmailBackend):
    """A mail server that hangs up on every message."""

    def send_messages(self, email_messages: Any) -> int:
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


REFUSING_BACKEND = f"{__name__}.RefusingBackend"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """``timezone.now()`` (and so every ``created_at``) reads ``clock[0]``."""
    now = [datetime(2030, 5, 6, 12, 0, tzinfo=UTC)]
    monkeypatch.setattr(timezone, "now", lambda: now[0])
    yield now


def _owner_of_new_organization(name: str) -> tuple[Organization, User]:
    organization = OrganizationFactory(name=name)
    user = MembershipFactory(organization=organization, role=Role.OWNER).user
    return organization, user


def _invite_now(actor: User, organization: Organization, email: str, capture: Any) -> Invitation:
    with capture(execute=True):
        invitation, _token = invitation_create(actor=actor, organization=organization, email=email)
    return invitation


def _refused(
    actor: User, organization: Organization, email: str, capture: Any
) -> InvitationRateLimited:
    rows, sent = Invitation.objects.count(), len(mail.outbox)
    with pytest.raises(InvitationRateLimited) as excinfo, capture(execute=True) as callbacks:
        invitation_create(actor=actor, organization=organization, email=email)
    assert callbacks == []  # no e-mail waiting for a commit either
    assert Invitation.objects.count() == rows
    assert len(mail.outbox) == sent
    return excinfo.value


# --- organization names ------------------------------------------------------------------------


@pytest.mark.parametrize(("char", "said"), REFUSED_CHARACTERS)
def test_organization_create_refuses_control_characters_and_line_breaks(char: str, said: str):
    user = UserFactory()
    with pytest.raises(ValidationFailed) as excinfo:
        organization_create(name=f"Acme{char}Bcc: x@evil.example", owner=user)
    assert excinfo.value.message == f"The organization name contains {said}; remove it."
    assert excinfo.value.details == {"character": said[-7:-1]}
    assert not Organization.objects.exists()
    assert not Membership.objects.exists()


def test_organization_create_trims_the_name_and_keeps_ordinary_unicode():
    user = UserFactory()
    organization = organization_create(name="  Ünïcode Studio — 東京 \u00a0", owner=user)
    assert organization.name == "Ünïcode Studio — 東京"
    organization.refresh_from_db()
    assert organization.name == "Ünïcode Studio — 東京"


def test_organization_rename_refuses_a_line_break(organization, owner):
    with pytest.raises(ValidationFailed) as excinfo:
        organization_rename(actor=owner, organization=organization, name=INJECTED)
    assert excinfo.value.message == (
        "The organization name contains a line break (U+000A); remove it."
    )
    organization.refresh_from_db()
    assert organization.name == "Acme"


def test_a_new_users_workspace_name_is_one_line_whatever_their_name():
    user = user_create(email="eve@example.com", password=None, grant_signup_tokens=False)
    assert Organization.objects.get(memberships__user=user).name == "eve's workspace"
    named = UserFactory(email="mallory@example.com", name="Mallory\r\nBcc: x@evil.example")
    organization = user_onboard(user=named, grant_signup_tokens=False)
    assert organization.name == "Mallory Bcc: x@evil.example's workspace"


def test_dashboard_new_organization_form_shows_the_error_and_creates_nothing(owner):
    before = Organization.objects.count()
    response = login(owner).post("/orgs/new/", {"name": INJECTED})
    assert response.status_code == 200
    assert "The organization name contains a line break (U+000A); remove it." in (
        response.content.decode()
    )
    assert Organization.objects.count() == before


def test_admin_refuses_a_control_character_in_an_organizations_name(organization, owner):
    operator = UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    url = f"/admin/accounts/organization/{organization.pk}/change/"
    data = form_data(client.get(url).content.decode(), "organization_form")
    data["name"] = ["Acme\x07Bcc: x@evil.example"]
    data["_save"] = ["Save"]
    response = client.post(url, data)
    assert response.status_code == 200
    assert "The organization name contains a control character (U+0007); remove it." in (
        response.content.decode()
    )
    organization.refresh_from_db()
    assert organization.name == "Acme"
    # A good name is trimmed and saved as before.
    data["name"] = ["  Acme Studio  "]
    assert client.post(url, data).status_code == 302
    organization.refresh_from_db()
    assert organization.name == "Acme Studio"


def test_createtenant_refuses_a_line_break_in_the_name_and_creates_nothing():
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "createtenant", "--email", "t@example.com", "--name", INJECTED, stdout=StringIO()
        )
    assert str(excinfo.value) == (
        "The organization name contains a line break (U+000A); remove it."
    )
    assert not User.objects.filter(email="t@example.com").exists()
    assert not Organization.objects.exists()


def test_text_helpers():
    assert control_character("plain text — ü 東京") is None
    assert control_character("a\u2028b") == "\u2028"
    assert control_character("a\nb\x07", allow="\n") == "\x07"
    assert single_line(" Acme\r\n\tBcc:\u2029x \x00 ") == "Acme Bcc: x"
    # The prompt parser shares the check and still takes line breaks of every kind.
    assert parse_prompt("a red\u2028fox\r\nat\tdawn").text == "a red fox at dawn"
    with pytest.raises(ValidationFailed) as excinfo:
        parse_prompt("a red\x07fox")
    assert excinfo.value.message == "The prompt contains a control character (U+0007); remove it."
    assert excinfo.value.details == {"character": "U+0007"}


# --- the invitation e-mail ---------------------------------------------------------------------


def test_an_organization_named_before_the_check_still_invites_with_a_one_line_subject(
    organization, owner, django_capture_on_commit_callbacks
):
    Organization.objects.filter(pk=organization.pk).update(name=INJECTED)
    organization.refresh_from_db()
    invitation = _invite_now(
        owner, organization, "new@example.com", django_capture_on_commit_callbacks
    )
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "[mjgate] You are invited to Acme Bcc: x@evil.example"
    assert message.to == ["new@example.com"]
    assert message.bcc == []
    assert message.message()["Bcc"] is None
    assert "invited you to join Acme Bcc: x@evil.example on mjgate as member." in message.body
    assert Invitation.objects.get().pk == invitation.pk


@pytest.mark.django_db(transaction=True)
def test_dashboard_invitation_from_an_organization_with_a_line_break_in_its_name():
    organization, owner = _owner_of_new_organization("Acme")
    Organization.objects.filter(pk=organization.pk).update(name=INJECTED)
    response = login(owner).post("/team/invite/", {"email": "new@example.com", "role": "member"})
    assert response.status_code == 302
    assert [m.subject for m in mail.outbox] == [
        "[mjgate] You are invited to Acme Bcc: x@evil.example"
    ]
    assert Invitation.objects.get().email == "new@example.com"


def test_a_mail_server_failure_withdraws_the_invitation(
    organization, owner, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = REFUSING_BACKEND
    with (
        pytest.raises(InvitationNotSent) as excinfo,
        django_capture_on_commit_callbacks(execute=True),
    ):
        invitation_create(actor=owner, organization=organization, email="new@example.com")
    assert excinfo.value.http_status == 503
    assert excinfo.value.message == (
        "The invitation e-mail could not be sent, so no invitation was made. "
        "Try again in a few minutes."
    )
    assert not Invitation.objects.exists()
    # Nothing is left in the way: once mail works the address is invited normally.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    _invite_now(owner, organization, "new@example.com", django_capture_on_commit_callbacks)
    assert Invitation.objects.get().is_open
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_dashboard_invitation_when_the_mail_server_fails_is_an_error_and_no_invitation(
    settings,
):
    settings.EMAIL_BACKEND = REFUSING_BACKEND
    _organization, owner = _owner_of_new_organization("Acme")
    response = login(owner).post("/team/invite/", {"email": "new@example.com", "role": "member"})
    assert response.status_code == 400
    assert "The invitation e-mail could not be sent, so no invitation was made." in (
        response.content.decode()
    )
    assert not Invitation.objects.exists()


# --- invitation limits -------------------------------------------------------------------------


def test_an_organization_may_send_20_invitations_an_hour(
    organization, owner, clock, django_capture_on_commit_callbacks
):
    for number in range(20):
        _invite_now(
            owner, organization, f"person{number}@example.com", django_capture_on_commit_callbacks
        )
        clock[0] += timedelta(minutes=1)
    assert len(mail.outbox) == 20
    # 20 minutes after the first one: it leaves the hour 40 minutes from now.
    error = _refused(
        owner, organization, "one-more@example.com", django_capture_on_commit_callbacks
    )
    assert error.http_status == 429
    assert error.code == "throttled"
    assert error.message == (
        "Acme has sent 20 invitations in the last hour, as many as an organization may; "
        "try again in 40 minutes."
    )
    assert error.details == {
        "retry_after": 40 * 60,
        "scope": "organization",
        "limit": 20,
        "window_seconds": 3600,
    }
    clock[0] += timedelta(minutes=40)
    _invite_now(owner, organization, "one-more@example.com", django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 21


def test_revoking_and_inviting_again_counts_against_the_organization(
    organization, owner, settings, clock, django_capture_on_commit_callbacks
):
    settings.INVITATION_RATE_PER_ORG_HOUR = 2
    settings.INVITATION_RATE_PER_ADDRESS_DAY = 0  # off: this test is about the organization
    for _ in range(2):
        invitation = _invite_now(
            owner, organization, "victim@example.com", django_capture_on_commit_callbacks
        )
        invitation_revoke(actor=owner, organization=organization, invitation_id=invitation.pk)
    error = _refused(owner, organization, "victim@example.com", django_capture_on_commit_callbacks)
    assert error.details["scope"] == "organization"
    assert error.details["retry_after"] == 3600
    assert error.message.endswith("try again in 1 hour.")


def test_an_address_is_invited_at_most_3_times_a_day_across_organizations(
    clock, django_capture_on_commit_callbacks
):
    for number in range(3):
        organization, owner = _owner_of_new_organization(f"Org {number}")
        _invite_now(owner, organization, "Victim@Example.com", django_capture_on_commit_callbacks)
        clock[0] += timedelta(hours=1)
    # A brand-new organization does not reset the address's count.
    organization, owner = _owner_of_new_organization("Fresh Org")
    # An expired invitation of the address there: retired only by an invitation that is made.
    expired = Invitation.objects.create(
        organization=organization,
        email="victim@example.com",
        token_hash="x" * 64,
        invited_by=owner,
        expires_at=clock[0] - timedelta(minutes=1),
    )
    Invitation.objects.filter(pk=expired.pk).update(created_at=clock[0] - timedelta(days=8))
    error = _refused(owner, organization, "victim@example.com", django_capture_on_commit_callbacks)
    assert error.message == (
        "victim@example.com has been invited 3 times in the last day, as often as one address "
        "may be; try again in 21 hours."
    )
    assert error.details == {
        "retry_after": 21 * 3600,
        "scope": "address",
        "limit": 3,
        "window_seconds": 86400,
    }
    expired.refresh_from_db()
    assert expired.revoked_at is None
    assert len(mail.outbox) == 3
    # Other addresses are not held back.
    _invite_now(owner, organization, "someone@example.com", django_capture_on_commit_callbacks)
    clock[0] += timedelta(hours=21)
    _invite_now(owner, organization, "victim@example.com", django_capture_on_commit_callbacks)
    assert [m.to for m in mail.outbox][-1] == ["victim@example.com"]


def test_one_person_creating_organizations_is_limited_across_them(
    settings, clock, django_capture_on_commit_callbacks
):
    settings.INVITATION_RATE_PER_USER_HOUR = 3
    inviter = UserFactory(email="spammer@example.com")
    organizations = [organization_create(name=f"Spam {n}", owner=inviter) for n in range(3)]
    for number, organization in enumerate(organizations):
        _invite_now(
            inviter, organization, f"t{number}@example.com", django_capture_on_commit_callbacks
        )
    another = organization_create(name="Spam 4", owner=inviter)
    error = _refused(inviter, another, "t9@example.com", django_capture_on_commit_callbacks)
    assert error.message == (
        "You have sent 3 invitations in the last hour, as many as one person may; "
        "try again in 1 hour."
    )
    assert error.details["scope"] == "inviter"


def test_a_limit_of_0_is_off(organization, owner, settings, django_capture_on_commit_callbacks):
    settings.INVITATION_RATE_PER_ADDRESS_DAY = 0
    for _ in range(5):
        invitation = _invite_now(
            owner, organization, "a@example.com", django_capture_on_commit_callbacks
        )
        invitation_revoke(actor=owner, organization=organization, invitation_id=invitation.pk)
    assert Invitation.objects.filter(email="a@example.com").count() == 5


def test_dashboard_shows_the_limit_and_changes_nothing(organization, owner, settings):
    settings.INVITATION_RATE_PER_ORG_HOUR = 1
    client = login(owner)
    first = client.post("/team/invite/", {"email": "one@example.com", "role": "member"})
    assert first.status_code == 302
    response = client.post("/team/invite/", {"email": "two@example.com", "role": "member"})
    assert response.status_code == 400
    assert "Acme has sent 1 invitation in the last hour, as many as an organization may" in (
        response.content.decode()
    )
    assert list(Invitation.objects.values_list("email", flat=True)) == ["one@example.com"]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_invitations_at_once_count_each_other(settings):
    settings.INVITATION_RATE_PER_ADDRESS_DAY = 1
    senders = [_owner_of_new_organization(f"Org {n}") for n in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def invite(organization: Organization, owner: User) -> None:
        try:
            barrier.wait(timeout=5)
            invitation_create(actor=owner, organization=organization, email="race@example.com")
            outcomes.append("ok")
        except InvitationRateLimited:
            outcomes.append("limited")
        finally:
            connection.close()

    threads = [threading.Thread(target=invite, args=sender) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(outcomes) == ["limited", "ok"]
    assert Invitation.objects.filter(email="race@example.com").count() == 1
    assert [m.to for m in mail.outbox] == [["race@example.com"]]
