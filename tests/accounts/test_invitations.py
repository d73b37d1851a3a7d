from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from apps.accounts.models import Invitation, Membership, Role, hash_invitation_token
from apps.accounts.services import invitation_accept, invitation_create, invitation_revoke
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LINK = re.compile(r"http://testserver/invitations/(?P<token>[A-Za-z0-9_-]+)/")


def _invite(actor, organization, email="new@example.com", role=Role.MEMBER):
    return invitation_create(actor=actor, organization=organization, email=email, role=role)


def _members(organization) -> dict[str, str]:
    return dict(
        Membership.objects.filter(organization=organization).values_list("user__email", "role")
    )


def test_invitation_sends_an_email_with_a_one_time_link(
    organization, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation, token = _invite(owner, organization, email="  New@Example.com ")
    assert invitation.email == "new@example.com"
    assert invitation.role == Role.MEMBER
    assert invitation.invited_by == owner
    assert invitation.is_open
    # Only the hash is stored; the token lives in the e-mailed link alone.
    assert invitation.token_hash == hash_invitation_token(token)
    assert token not in str(list(Invitation.objects.values()))
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new@example.com"]
    assert message.subject == "[mjgate] You are invited to Acme"
    match = LINK.search(message.body)
    assert match is not None
    assert match["token"] == token
    assert f"{owner.email} invited you to join Acme on mjgate as member." in message.body


def test_accept_by_the_invited_address_creates_the_membership(organization, owner):
    invitation, token = _invite(owner, organization, role=Role.ADMIN)
    invitee = UserFactory(email="new@example.com")
    membership = invitation_accept(token=token, user=invitee)
    assert (membership.organization, membership.role) == (organization, Role.ADMIN)
    invitation.refresh_from_db()
    assert invitation.accepted_by == invitee
    assert invitation.accepted_at is not None
    assert not invitation.is_open


def test_accept_by_another_address_is_refused(organization, owner):
    invitation, token = _invite(owner, organization)
    stranger = UserFactory(email="stranger@example.com")
    with pytest.raises(PermissionDenied) as excinfo:
        invitation_accept(token=token, user=stranger)
    assert excinfo.value.message == "This invitation was sent to another e-mail address."
    invitation.refresh_from_db()
    assert invitation.accepted_at is None
    assert stranger.email not in _members(organization)


def test_a_used_invitation_cannot_be_used_again(organization, owner):
    _, token = _invite(owner, organization)
    invitee = UserFactory(email="new@example.com")
    invitation_accept(token=token, user=invitee)
    Membership.objects.filter(user=invitee, organization=organization).delete()
    with pytest.raises(Conflict) as excinfo:
        invitation_accept(token=token, user=invitee)
    assert excinfo.value.message == (
        "This invitation has expired, been revoked or already been used."
    )
    assert invitee.email not in _members(organization)


def test_an_expired_invitation_is_refused(organization, owner):
    invitation, token = _invite(owner, organization)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    invitee = UserFactory(email="new@example.com")
    with pytest.raises(Conflict):
        invitation_accept(token=token, user=invitee)
    assert invitee.email not in _members(organization)


def test_a_revoked_invitation_is_refused(organization, owner, admin_user):
    invitation, token = _invite(owner, organization)
    invitation_revoke(actor=admin_user, organization=organization, invitation_id=invitation.pk)
    invitee = UserFactory(email="new@example.com")
    with pytest.raises(Conflict):
        invitation_accept(token=token, user=invitee)
    assert invitee.email not in _members(organization)
    with pytest.raises(NotFound):
        invitation_revoke(actor=owner, organization=organization, invitation_id=invitation.pk)


def test_an_unknown_token_is_not_found(organization, owner):
    _invite(owner, organization)
    with pytest.raises(NotFound):
        invitation_accept(token="not-a-token", user=UserFactory(email="new@example.com"))


def test_a_duplicate_open_invitation_is_refused(organization, owner, admin_user):
    _invite(owner, organization)
    with pytest.raises(Conflict) as excinfo:
        _invite(admin_user, organization, email="NEW@example.com")
    assert excinfo.value.message == "new@example.com already has an open invitation."
    assert Invitation.objects.filter(organization=organization).count() == 1


def test_an_address_can_be_invited_again_once_its_invitation_expired(organization, owner):
    first, _ = _invite(owner, organization)
    Invitation.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    second, token = _invite(owner, organization)
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert second.is_open
    assert invitation_accept(token=token, user=UserFactory(email="new@example.com")).role == (
        Role.MEMBER
    )


def test_the_same_address_may_be_invited_by_two_organizations(
    organization, owner, other_organization, outsider
):
    _invite(owner, organization)
    _invite(outsider, other_organization)
    assert Invitation.objects.filter(email="new@example.com").count() == 2


def test_existing_members_are_not_invited(organization, owner, member):
    with pytest.raises(Conflict):
        _invite(owner, organization, email=member.email.upper())
    assert not Invitation.objects.exists()


def test_invalid_email_is_refused(organization, owner):
    with pytest.raises(ValidationFailed):
        _invite(owner, organization, email="not-an-address")
    assert not Invitation.objects.exists()


def test_member_cannot_invite_or_revoke(organization, owner, member):
    with pytest.raises(PermissionDenied):
        _invite(member, organization)
    invitation, _ = _invite(owner, organization)
    with pytest.raises(PermissionDenied):
        invitation_revoke(actor=member, organization=organization, invitation_id=invitation.pk)
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert Invitation.objects.count() == 1


def test_admin_invites_but_cannot_invite_an_owner(organization, admin_user):
    invitation, _ = _invite(admin_user, organization, role=Role.ADMIN)
    assert invitation.role == Role.ADMIN
    with pytest.raises(PermissionDenied):
        _invite(admin_user, organization, email="boss@example.com", role=Role.OWNER)
    assert list(Invitation.objects.values_list("email", flat=True)) == ["new@example.com"]


def test_outsider_cannot_invite_or_revoke(organization, owner, outsider):
    invitation, _ = _invite(owner, organization)
    with pytest.raises(NotFound):
        _invite(outsider, organization, email="friend@example.com")
    with pytest.raises(NotFound):
        invitation_revoke(actor=outsider, organization=organization, invitation_id=invitation.pk)
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert Invitation.objects.count() == 1


def test_revoking_another_organizations_invitation_is_not_found(
    organization, owner, other_organization, outsider
):
    foreign, _ = _invite(outsider, other_organization)
    with pytest.raises(NotFound):
        invitation_revoke(actor=owner, organization=organization, invitation_id=foreign.pk)
    foreign.refresh_from_db()
    assert foreign.revoked_at is None
