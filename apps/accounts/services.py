"""Writes for people, organizations, memberships and invitations."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.billing.ledger import balance_initialize, ledger_grant_signup
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

from .models import (
    Invitation,
    Membership,
    MembershipTier,
    Organization,
    Role,
    User,
    hash_invitation_token,
)
from .roles import Capability, role_allows
from .selectors import membership_require, tier_get_default

INVITATION_LIFETIME = timedelta(days=7)


@transaction.atomic
def organization_create(
    *,
    name: str,
    owner: User,
    tier: MembershipTier | None = None,
    is_personal: bool = False,
) -> Organization:
    name = name.strip()
    if not name:
        raise ValidationFailed("An organization needs a name.")
    organization = Organization.objects.create(
        name=name[:120], tier=tier or tier_get_default(), is_personal=is_personal
    )
    Membership.objects.create(user=owner, organization=organization, role=Role.OWNER)
    balance_initialize(organization=organization)
    return organization


@transaction.atomic
def user_onboard(*, user: User, grant_signup_tokens: bool = True) -> Organization:
    """Give a new user their personal organization (and the sign-up grant, SPEC §3)."""
    label = user.name or user.email.split("@", 1)[0]
    organization = organization_create(name=f"{label}'s workspace", owner=user, is_personal=True)
    if grant_signup_tokens:
        ledger_grant_signup(organization=organization)
    return organization


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None = None,
    name: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
    grant_signup_tokens: bool = True,
) -> User:
    email = User.objects.normalize_email(email).strip().lower()
    email_field = User._meta.get_field("email")
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        message = f"'{email}' is not an e-mail address." if email else "An e-mail is required."
        raise ValidationFailed(message, details={"field": "email"}) from exc
    if len(email) > (email_field.max_length or 254):
        raise ValidationFailed(
            f"An e-mail address has at most {email_field.max_length} characters.",
            details={"field": "email"},
        )
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict(f"A user with the e-mail address {email} already exists.")
    user = User.objects.create_user(
        email=email, password=password, name=name, is_staff=is_staff, is_superuser=is_superuser
    )
    user_onboard(user=user, grant_signup_tokens=grant_signup_tokens)
    return user


def organization_set_tier(*, organization: Organization, tier: MembershipTier) -> Organization:
    # A save (not a queryset update) so its signal drops the cached copies of the organization
    # that its API keys carry (apps.api_keys.services).
    organization.tier = tier
    organization.updated_at = timezone.now()
    organization.save(update_fields=["tier", "updated_at"])
    return organization


def organization_rename(*, actor: User, organization: Organization, name: str) -> Organization:
    membership_require(
        user=actor, organization_id=organization.pk, capability=Capability.MANAGE_MEMBERS
    )
    if not name.strip():
        raise ValidationFailed("An organization needs a name.")
    organization.name = name.strip()[:120]
    organization.save(update_fields=["name", "updated_at"])
    return organization


def _assert_can_assign(actor_membership: Membership, role: str) -> None:
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role '{role}'. Use one of: {', '.join(Role.values)}.")
    # Only owners hand out or take away ownership; admins manage admins and members.
    if role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can make someone an owner.")


def _lock_organization(organization: Organization) -> None:
    """Serialise membership changes of one organization.

    Locking only the membership being changed would let two owners demote each other at the
    same time, each counting the other as the remaining owner, and leave none.
    """
    Organization.objects.select_for_update().filter(pk=organization.pk).first()


def _owner_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


@transaction.atomic
def membership_change_role(
    *, actor: User, membership_id: int, organization: Organization, role: str
) -> Membership:
    # Lock before reading the actor's own role, so a role changed a moment ago is seen.
    _lock_organization(organization)
    actor_membership = membership_require(
        user=actor, organization_id=organization.pk, capability=Capability.MANAGE_MEMBERS
    )
    _assert_can_assign(actor_membership, role)
    try:
        membership = Membership.objects.select_for_update().get(
            pk=membership_id, organization=organization
        )
    except Membership.DoesNotExist as exc:
        raise NotFound("Member not found.") from exc
    if membership.role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can change an owner's role.")
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(organization) <= 1:
        raise Conflict("An organization must keep at least one owner.")
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    return membership


@transaction.atomic
def membership_remove(*, actor: User, membership_id: int, organization: Organization) -> None:
    _lock_organization(organization)
    try:
        membership = Membership.objects.select_for_update().get(
            pk=membership_id, organization=organization
        )
    except Membership.DoesNotExist as exc:
        raise NotFound("Member not found.") from exc
    leaving_self = membership.user_id == actor.pk
    actor_membership = membership_require(
        user=actor,
        organization_id=organization.pk,
        capability=Capability.VIEW_TASKS if leaving_self else Capability.MANAGE_MEMBERS,
    )
    if membership.role == Role.OWNER and not leaving_self and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    if membership.role == Role.OWNER and _owner_count(organization) <= 1:
        raise Conflict("An organization must keep at least one owner.")
    membership.delete()


def invitation_create(
    *, actor: User, organization: Organization, email: str, role: str = Role.MEMBER
) -> tuple[Invitation, str]:
    """Invite an e-mail address. Returns the invitation and the one-time token for the link."""
    actor_membership = membership_require(
        user=actor, organization_id=organization.pk, capability=Capability.MANAGE_MEMBERS
    )
    _assert_can_assign(actor_membership, role)
    email = User.objects.normalize_email(email).strip().lower()
    if not email or "@" not in email:
        raise ValidationFailed("Enter a valid e-mail address.")
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member of {organization.name}.")
    # An expired invitation is not open any more, but the unique constraint only knows about
    # acceptance and revocation: retire it so the address can be invited again.
    Invitation.objects.filter(
        organization=organization,
        email=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__lte=timezone.now(),
    ).update(revoked_at=timezone.now())
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization,
                email=email,
                role=role,
                token_hash=hash_invitation_token(token),
                invited_by=actor,
                expires_at=timezone.now() + INVITATION_LIFETIME,
            )
    except IntegrityError as exc:
        raise Conflict(f"{email} already has an open invitation.") from exc
    link = f"{settings.PUBLIC_BASE_URL}/invitations/{token}/"
    transaction.on_commit(
        lambda: send_mail(
            subject=f"[mjgate] You are invited to {organization.name}",
            message=(
                f"{actor.email} invited you to join {organization.name} on mjgate as "
                f"{invitation.get_role_display().lower()}.\n\nAccept: {link}\n\n"
                f"The link expires in {INVITATION_LIFETIME.days} days."
            ),
            from_email=None,
            recipient_list=[email],
        )
    )
    return invitation, token


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    try:
        invitation = (
            Invitation.objects.select_for_update(of=("self",))
            .select_related("organization")
            .get(token_hash=hash_invitation_token(token))
        )
    except Invitation.DoesNotExist as exc:
        raise NotFound("This invitation does not exist.") from exc
    if not invitation.is_open:
        raise Conflict("This invitation has expired, been revoked or already been used.")
    if not invitation.organization.is_active:
        # Nothing written: the invitation stays open should the organization be enabled again.
        raise Conflict(
            f"{invitation.organization.name} has been disabled, so its invitations cannot be "
            "accepted. Ask the person who invited you to contact support."
        )
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied("This invitation was sent to another e-mail address.")
    membership, _ = Membership.objects.get_or_create(
        user=user, organization=invitation.organization, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    return membership


def invitation_revoke(*, actor: User, organization: Organization, invitation_id: int) -> None:
    membership_require(
        user=actor, organization_id=organization.pk, capability=Capability.MANAGE_MEMBERS
    )
    updated = Invitation.objects.filter(
        pk=invitation_id,
        organization=organization,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    ).update(revoked_at=timezone.now())
    if not updated:
        raise NotFound("Invitation not found.")


def role_check(*, membership: Membership, capability: Capability) -> None:
    if not role_allows(membership.role, capability):
        raise PermissionDenied(
            f"Your role ({membership.get_role_display()}) does not allow this action."
        )
