"""Reads for people and organizations. Every read of tenant data takes the organization."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.errors import NotFound, PermissionDenied

from .models import Invitation, Membership, MembershipTier, Organization, User
from .roles import Capability, role_allows


def tier_get_default() -> MembershipTier:
    tier = MembershipTier.objects.filter(is_default=True).first()
    if tier is None:
        tier = MembershipTier.objects.filter(code="FREE").first()
    if tier is None:
        raise NotFound("No default membership tier is configured.")
    return tier


def tier_list() -> QuerySet[MembershipTier]:
    return MembershipTier.objects.order_by("sort_order", "max_unfinished_tasks")


def tier_get(*, code: str) -> MembershipTier:
    try:
        return MembershipTier.objects.get(code__iexact=code)
    except MembershipTier.DoesNotExist as exc:
        known = ", ".join(MembershipTier.objects.values_list("code", flat=True))
        raise NotFound(f"Unknown membership tier '{code}'. Use one of: {known}.") from exc


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return (
        Organization.objects.filter(memberships__user=user, is_active=True)
        .select_related("tier")
        .order_by("-is_personal", "name", "id")
    )


def membership_get(*, user: User, organization_id: int) -> Membership:
    """The user's membership in an organization. Not a member answers like a missing org."""
    try:
        return Membership.objects.select_related("organization", "organization__tier").get(
            user=user, organization_id=organization_id, organization__is_active=True
        )
    except (Membership.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("Organization not found.") from exc


def membership_require(*, user: User, organization_id: int, capability: Capability) -> Membership:
    """Membership with the capability, else NotFound (not a member) or PermissionDenied (role)."""
    membership = membership_get(user=user, organization_id=organization_id)
    if not role_allows(membership.role, capability):
        raise PermissionDenied(
            f"Your role ({membership.get_role_display()}) does not allow this action."
        )
    return membership


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("created_at", "id")
    )


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organization=organization).select_related("invited_by")
