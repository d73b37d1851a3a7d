"""Writes for people, organizations, memberships and invitations."""

from __future__ import annotations

import functools
import logging
import math
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from apps.billing.ledger import balance_initialize, ledger_grant_signup
from apps.core.db import advisory_xact_lock
from apps.core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ServiceError,
    ServiceUnavailable,
    ValidationFailed,
)
from apps.core.text import single_line

from .models import (
    Invitation,
    Membership,
    MembershipTier,
    Organization,
    Role,
    User,
    hash_invitation_token,
    organization_name_clean,
)
from .roles import Capability, role_allows
from .selectors import membership_require, tier_get_default

logger = logging.getLogger(__name__)

INVITATION_LIFETIME = timedelta(days=7)


@transaction.atomic
def organization_create(
    *,
    name: str,
    owner: User,
    tier: MembershipTier | None = None,
    is_personal: bool = False,
) -> Organization:
    organization = Organization.objects.create(
        name=organization_name_clean(name), tier=tier or tier_get_default(), is_personal=is_personal
    )
    Membership.objects.create(user=owner, organization=organization, role=Role.OWNER)
    balance_initialize(organization=organization)
    return organization


@transaction.atomic
def user_onboard(*, user: User, grant_signup_tokens: bool = True) -> Organization:
    """Give a new user their personal organization (and the sign-up grant, SPEC §3)."""
    # Made one line: a user's name (or a quoted e-mail local part) may hold characters an
    # organization's name refuses, and signing up must not fail on them.
    label = single_line(user.name) or single_line(user.email.split("@", 1)[0])
    organization = organization_create(
        name=f"{label}'s workspace" if label else "Personal workspace", owner=user, is_personal=True
    )
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
    organization.name = organization_name_clean(name)
    organization.save(update_fields=["name", "updated_at"])
    return organization


def _assert_can_assign(actor_membership: Membership, role: str) -> None:
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role '{role}'. Use one of: {', '.join(Role.values)}.")
    # Only owners hand out or take away ownership; admins manage admins and members.
    if role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can make someone an owner.")


class LastOwner(Conflict):
    """A change would leave an active organization without an owner: nobody could manage its
    members, its billing or its deletion any more."""

    code = "last_owner"
    default_message = "An organization must keep at least one owner."


def _lock_organizations(organization_ids: Iterable[int]) -> None:
    """Serialise membership changes of these organizations.

    Locking only the membership being changed would let two owners demote each other at the
    same time, each counting the other as the remaining owner, and leave none. The rows are
    locked in primary-key order, so two writers touching the same organizations cannot
    deadlock; ``no_key`` leaves inserts that point at an organization (a membership, a ledger
    entry) free to take their KEY SHARE lock (see ``apps/billing/ledger.py``).
    """
    ids = sorted(set(organization_ids))
    if ids:
        list(
            Organization.objects.select_for_update(no_key=True)
            .filter(pk__in=ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )


def _lock_organization(organization: Organization) -> None:
    _lock_organizations([organization.pk])


def _owner_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


@dataclass(frozen=True)
class _Ownership:
    name: str
    is_active: bool
    has_owner: bool


def _ownership(organization_ids: set[int]) -> dict[int, _Ownership]:
    owners = Membership.objects.filter(organization=OuterRef("pk"), role=Role.OWNER)
    rows = (
        Organization.objects.filter(pk__in=organization_ids)
        .annotate(has_owner=Exists(owners))
        .values_list("pk", "name", "is_active", "has_owner")
    )
    return {pk: _Ownership(name, active, owned) for pk, name, active, owned in rows}


def _ownerless(before: dict[int, _Ownership], after: dict[int, _Ownership]) -> list[str]:
    """Why each organization the writes left active without an owner is refused."""
    reasons = []
    for pk, now in sorted(after.items()):
        was = before.get(pk)
        if not now.is_active or now.has_owner:
            continue
        if was is not None and was.is_active and not was.has_owner:
            continue  # ownerless before these writes already: not theirs to fix
        name = was.name if was is not None else now.name  # as the operator knew it
        if was is not None and was.is_active:
            reasons.append(
                f"{name} would be left without an owner: make another member an owner first, "
                "or disable the organization."
            )
        else:
            reasons.append(
                f"{name} has no owner, so it cannot be enabled: make a member an owner first."
            )
    return reasons


@contextmanager
def organizations_keep_owner(
    *,
    organization_ids: Iterable[int] = (),
    membership_ids: Iterable[int] = (),
    user_ids: Iterable[int] = (),
) -> Iterator[None]:
    """Run the writes in the ``with`` block (an operator's admin form or deletion) so that they
    leave no active organization without an owner, or do not happen at all.

    The organizations checked are those named, those of the memberships named (where they are
    before the block runs) and those the users named belong to. They are locked first
    (``_lock_organizations``, as the dashboard's ``membership_change_role`` and
    ``membership_remove`` do), then their owners counted before and after the block: two
    operators removing an organization's last two owners at once are serialised, and the second
    counts after the first committed. The rule:

    * an active organization keeps at least one owner: a block that demotes or removes its last
      owner, or deletes that owner's user, raises ``LastOwner`` and is rolled back as a whole;
    * a disabled organization may lose its owners (how an operator retires a tenant, such as
      the personal workspace of a user whose account is to be erased), but it is not enabled
      again without one;
    * an organization deleted in the block is not checked: its memberships go with it;
    * an organization that was active without an owner already is not held against unrelated
      edits; only a block that makes one is refused.
    """
    with transaction.atomic():
        ids = set(organization_ids)
        membership_ids, user_ids = list(membership_ids), list(user_ids)
        if membership_ids:
            ids.update(
                Membership.objects.filter(pk__in=membership_ids).values_list(
                    "organization_id", flat=True
                )
            )
        if user_ids:
            ids.update(
                Membership.objects.filter(user_id__in=user_ids).values_list(
                    "organization_id", flat=True
                )
            )
        _lock_organizations(ids)
        before = _ownership(ids)
        yield
        refused = _ownerless(before, _ownership(ids))
        if refused:
            raise LastOwner(" ".join(refused))


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
        raise LastOwner()
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
        raise LastOwner()
    membership.delete()


class InvitationRateLimited(ServiceError):
    """Too many invitation e-mails in a window: from one organization, from one inviter, or to
    one address across all organizations. Nothing was written and nothing sent."""

    code = "throttled"
    http_status = 429
    default_message = "Too many invitations were sent; try again later."


class InvitationNotSent(ServiceUnavailable):
    """The mail server did not take an invitation's e-mail, so the invitation was withdrawn."""

    code = "email_not_sent"
    default_message = (
        "The invitation e-mail could not be sent, so no invitation was made. "
        "Try again in a few minutes."
    )


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _in_words(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return _counted(minutes, "minute")
    return _counted(math.ceil(minutes / 60), "hour")


@dataclass(frozen=True)
class _InvitationLimit:
    scope: str
    limit: int
    window: timedelta
    invitations: QuerySet[Invitation]
    refusal: str  # the sentence's start; the wait is added to it


def _invitation_limits_check(
    *, organization: Organization, actor: User, email: str, now: datetime
) -> None:
    """Refuse an invitation that would go over a limit on invitation e-mails: without them,
    anyone may send unlimited mail from our domain, its subject naming an organization they
    named, to addresses they chose.

    The limits (``INVITATION_RATE_PER_ORG_HOUR``, ``INVITATION_RATE_PER_USER_HOUR``,
    ``INVITATION_RATE_PER_ADDRESS_DAY``; 0 turns one off) are counted in PostgreSQL from the
    invitations themselves, revoked, expired and accepted ones included, so revoking and
    inviting again, or inviting from a new organization, counts. Not in Redis like the API's
    request limits: those fail open while Redis is down, and a limit on e-mail to addresses
    someone else chose must not; PostgreSQL is needed to write the invitation anyway. Advisory
    locks on the organization, the inviter and the address (always taken in that order, so two
    invitations cannot deadlock) make two invitations at once count each other; they are held
    until the invitation's transaction ends.
    """
    advisory_xact_lock(f"invitation:organization:{organization.pk}")
    advisory_xact_lock(f"invitation:inviter:{actor.pk}")
    advisory_xact_lock(f"invitation:address:{email}")
    hour, day = timedelta(hours=1), timedelta(days=1)
    limits = (
        _InvitationLimit(
            "organization",
            int(settings.INVITATION_RATE_PER_ORG_HOUR),
            hour,
            Invitation.objects.filter(organization=organization),
            f"{single_line(organization.name)} has sent "
            f"{_counted(settings.INVITATION_RATE_PER_ORG_HOUR, 'invitation')} in the last hour, "
            "as many as an organization may",
        ),
        _InvitationLimit(
            "inviter",
            int(settings.INVITATION_RATE_PER_USER_HOUR),
            hour,
            Invitation.objects.filter(invited_by=actor),
            f"You have sent {_counted(settings.INVITATION_RATE_PER_USER_HOUR, 'invitation')} in "
            "the last hour, as many as one person may",
        ),
        _InvitationLimit(
            "address",
            int(settings.INVITATION_RATE_PER_ADDRESS_DAY),
            day,
            Invitation.objects.filter(email=email),
            f"{email} has been invited {_counted(settings.INVITATION_RATE_PER_ADDRESS_DAY, 'time')} "
            "in the last day, as often as one address may be",
        ),
    )
    for limit in limits:
        if limit.limit <= 0:
            continue
        sent = list(
            limit.invitations.filter(created_at__gt=now - limit.window)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        if len(sent) < limit.limit:
            continue
        # One more fits once the oldest invitations beyond the limit leave the window.
        frees_at = sent[len(sent) - limit.limit] + limit.window
        retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
        raise InvitationRateLimited(
            f"{limit.refusal}; try again in {_in_words(retry_after)}.",
            details={
                "retry_after": retry_after,
                "scope": limit.scope,
                "limit": limit.limit,
                "window_seconds": int(limit.window.total_seconds()),
            },
        )


def _invitation_send(*, invitation_id: int, message: EmailMessage) -> None:
    """After the invitation's commit: hand its e-mail to the mail server, or withdraw it.

    Elsewhere a failed mail is logged and the work it reports stands (an alert, a disabled
    endpoint); here the e-mail is the invitation: only it carries the token, which is stored
    nowhere, so an invitation whose e-mail was not taken could never be accepted nor sent
    again. It is deleted (it reached nobody, so it does not count against the limits either)
    and the inviter is told to try again.
    """
    try:
        message.send()
    except Exception as exc:  # SMTP refusal, connection trouble, a header the backend refused
        Invitation.objects.filter(pk=invitation_id, accepted_at__isnull=True).delete()
        logger.warning(
            "invitation e-mail not sent (%s); the invitation was withdrawn",
            exc.__class__.__name__,
            extra={"invitation_id": invitation_id},
        )
        raise InvitationNotSent() from exc


@transaction.atomic
def invitation_create(
    *, actor: User, organization: Organization, email: str, role: str = Role.MEMBER
) -> tuple[Invitation, str]:
    """Invite an e-mail address. Returns the invitation and the one-time token for the link.

    Raises ``InvitationRateLimited`` (nothing written, nothing sent) over a limit, and
    ``InvitationNotSent`` when the mail server did not take the e-mail, which is sent once the
    invitation is committed (the invitation is withdrawn then: see ``_invitation_send``).
    """
    actor_membership = membership_require(
        user=actor, organization_id=organization.pk, capability=Capability.MANAGE_MEMBERS
    )
    _assert_can_assign(actor_membership, role)
    email = User.objects.normalize_email(email).strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        raise ValidationFailed("Enter a valid e-mail address.", details={"field": "email"}) from exc
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member of {organization.name}.")
    now = timezone.now()
    _invitation_limits_check(organization=organization, actor=actor, email=email, now=now)
    # An expired invitation is not open any more, but the unique constraint only knows about
    # acceptance and revocation: retire it so the address can be invited again.
    Invitation.objects.filter(
        organization=organization,
        email=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__lte=now,
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization,
                email=email,
                role=role,
                token_hash=hash_invitation_token(token),
                invited_by=actor,
                expires_at=now + INVITATION_LIFETIME,
            )
    except IntegrityError as exc:
        raise Conflict(f"{email} already has an open invitation.") from exc
    # One line whatever the stored name: an organization named before names were checked may
    # hold a line break, which in a subject Django refuses as a header injection.
    name = single_line(organization.name)
    link = f"{settings.PUBLIC_BASE_URL}/invitations/{token}/"
    message = EmailMessage(
        subject=f"[mjgate] You are invited to {name}",
        body=(
            f"{actor.email} invited you to join {name} on mjgate as "
            f"{invitation.get_role_display().lower()}.\n\nAccept: {link}\n\n"
            f"The link expires in {INVITATION_LIFETIME.days} days."
        ),
        to=[email],
    )
    transaction.on_commit(
        functools.partial(_invitation_send, invitation_id=invitation.pk, message=message)
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
