from __future__ import annotations

import pytest

from apps.accounts.models import Membership, Role
from apps.accounts.roles import ROLE_CAPABILITIES, Capability, role_allows
from apps.accounts.selectors import membership_require
from apps.accounts.services import role_check
from apps.core.errors import NotFound, PermissionDenied

EXPECTED = {
    Role.MEMBER: {Capability.VIEW_TASKS, Capability.CREATE_TASKS},
    Role.ADMIN: {
        Capability.VIEW_TASKS,
        Capability.CREATE_TASKS,
        Capability.MANAGE_KEYS,
        Capability.MANAGE_WEBHOOKS,
        Capability.MANAGE_MEMBERS,
        Capability.MANAGE_SETTINGS,
        Capability.MANAGE_UPSTREAM_ACCOUNTS,
    },
    Role.OWNER: set(Capability),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("capability", list(Capability))
def test_capability_matrix(role, capability):
    assert role_allows(role, capability) is (capability in EXPECTED[role])


def test_every_role_is_described():
    assert set(ROLE_CAPABILITIES) == set(Role.values)


def test_unknown_role_allows_nothing():
    assert not any(role_allows("superhero", capability) for capability in Capability)


@pytest.mark.django_db
def test_membership_require_by_role(organization, owner, admin_user, member):
    assert (
        membership_require(
            user=owner, organization_id=organization.pk, capability=Capability.MANAGE_BILLING
        ).role
        == Role.OWNER
    )
    assert (
        membership_require(
            user=admin_user, organization_id=organization.pk, capability=Capability.MANAGE_KEYS
        ).role
        == Role.ADMIN
    )
    with pytest.raises(PermissionDenied) as excinfo:
        membership_require(
            user=admin_user, organization_id=organization.pk, capability=Capability.MANAGE_BILLING
        )
    assert excinfo.value.message == "Your role (Admin) does not allow this action."
    with pytest.raises(PermissionDenied):
        membership_require(
            user=member, organization_id=organization.pk, capability=Capability.MANAGE_KEYS
        )
    assert (
        membership_require(
            user=member, organization_id=organization.pk, capability=Capability.CREATE_TASKS
        ).role
        == Role.MEMBER
    )


@pytest.mark.django_db
def test_outsider_is_told_the_organization_does_not_exist(organization, outsider):
    # Not "forbidden": a foreign organization answers exactly like a missing one.
    with pytest.raises(NotFound) as excinfo:
        membership_require(
            user=outsider, organization_id=organization.pk, capability=Capability.VIEW_TASKS
        )
    assert excinfo.value.message == "Organization not found."
    with pytest.raises(NotFound) as missing:
        membership_require(user=outsider, organization_id=999_999, capability=Capability.VIEW_TASKS)
    assert missing.value.message == excinfo.value.message


@pytest.mark.django_db
def test_disabled_organization_is_not_found(organization, owner):
    organization.is_active = False
    organization.save()
    with pytest.raises(NotFound):
        membership_require(
            user=owner, organization_id=organization.pk, capability=Capability.VIEW_TASKS
        )


@pytest.mark.django_db
def test_role_check(organization, member):
    membership = Membership.objects.get(user=member, organization=organization)
    role_check(membership=membership, capability=Capability.CREATE_TASKS)
    with pytest.raises(PermissionDenied) as excinfo:
        role_check(membership=membership, capability=Capability.MANAGE_MEMBERS)
    assert excinfo.value.message == "Your role (Member) does not allow this action."
