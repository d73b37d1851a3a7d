from __future__ import annotations

import threading

import pytest
from django.db import connection

from apps.accounts.models import Membership, Organization, Role
from apps.accounts.selectors import membership_list, organization_list_for_user
from apps.accounts.services import (
    membership_change_role,
    membership_remove,
    organization_create,
    organization_rename,
)
from apps.billing.models import Balance
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _roles(organization: Organization) -> dict[str, str]:
    return {m.user.email: m.role for m in membership_list(organization=organization)}


def _membership(user, organization) -> Membership:
    return Membership.objects.get(user=user, organization=organization)


def test_organization_create_makes_the_creator_owner_with_an_empty_balance():
    user = UserFactory()
    organization = organization_create(name="  Studio  ", owner=user)
    assert organization.name == "Studio"
    assert organization.tier.code == "FREE"
    assert organization.is_personal is False
    assert _roles(organization) == {user.email: Role.OWNER}
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held) == (0, 0)


def test_organization_create_needs_a_name():
    user = UserFactory()
    with pytest.raises(ValidationFailed):
        organization_create(name="   ", owner=user)
    assert not Organization.objects.exists()


def test_user_sees_only_their_organizations(organization, owner, other_organization, outsider):
    assert list(organization_list_for_user(user=owner)) == [organization]
    assert list(organization_list_for_user(user=outsider)) == [other_organization]


# --- changing roles ------------------------------------------------------------------------


def test_member_cannot_change_roles(organization, owner, admin_user, member):
    before = _roles(organization)
    with pytest.raises(PermissionDenied):
        membership_change_role(
            actor=member,
            organization=organization,
            membership_id=_membership(admin_user, organization).pk,
            role=Role.MEMBER,
        )
    with pytest.raises(PermissionDenied):
        membership_change_role(
            actor=member,
            organization=organization,
            membership_id=_membership(member, organization).pk,
            role=Role.ADMIN,
        )
    assert _roles(organization) == before


def test_admin_manages_members_and_admins(organization, owner, admin_user, member):
    promoted = membership_change_role(
        actor=admin_user,
        organization=organization,
        membership_id=_membership(member, organization).pk,
        role=Role.ADMIN,
    )
    assert promoted.role == Role.ADMIN
    demoted = membership_change_role(
        actor=admin_user,
        organization=organization,
        membership_id=_membership(member, organization).pk,
        role=Role.MEMBER,
    )
    assert demoted.role == Role.MEMBER
    assert _roles(organization) == {
        owner.email: Role.OWNER,
        admin_user.email: Role.ADMIN,
        member.email: Role.MEMBER,
    }


def test_admin_cannot_grant_ownership(organization, owner, admin_user, member):
    before = _roles(organization)
    for target in (member, admin_user):
        with pytest.raises(PermissionDenied) as excinfo:
            membership_change_role(
                actor=admin_user,
                organization=organization,
                membership_id=_membership(target, organization).pk,
                role=Role.OWNER,
            )
        assert excinfo.value.message == "Only an owner can make someone an owner."
    assert _roles(organization) == before


def test_admin_cannot_demote_an_owner(organization, owner, admin_user):
    with pytest.raises(PermissionDenied) as excinfo:
        membership_change_role(
            actor=admin_user,
            organization=organization,
            membership_id=_membership(owner, organization).pk,
            role=Role.MEMBER,
        )
    assert excinfo.value.message == "Only an owner can change an owner's role."
    assert _membership(owner, organization).role == Role.OWNER


def test_owner_can_grant_ownership(organization, owner, admin_user):
    membership_change_role(
        actor=owner,
        organization=organization,
        membership_id=_membership(admin_user, organization).pk,
        role=Role.OWNER,
    )
    assert _membership(admin_user, organization).role == Role.OWNER


def test_last_owner_cannot_be_demoted(organization, owner, admin_user):
    with pytest.raises(Conflict) as excinfo:
        membership_change_role(
            actor=owner,
            organization=organization,
            membership_id=_membership(owner, organization).pk,
            role=Role.ADMIN,
        )
    assert excinfo.value.message == "An organization must keep at least one owner."
    assert _membership(owner, organization).role == Role.OWNER


def test_an_owner_may_step_down_while_another_owner_remains(organization, owner):
    second = MembershipFactory(organization=organization, role=Role.OWNER).user
    membership_change_role(
        actor=owner,
        organization=organization,
        membership_id=_membership(owner, organization).pk,
        role=Role.MEMBER,
    )
    assert _roles(organization) == {owner.email: Role.MEMBER, second.email: Role.OWNER}


def test_unknown_role_is_refused(organization, owner, member):
    with pytest.raises(ValidationFailed) as excinfo:
        membership_change_role(
            actor=owner,
            organization=organization,
            membership_id=_membership(member, organization).pk,
            role="boss",
        )
    assert excinfo.value.message == "Unknown role 'boss'. Use one of: owner, admin, member."
    assert _membership(member, organization).role == Role.MEMBER


def test_membership_of_another_organization_is_not_found(
    organization, owner, other_organization, outsider
):
    foreign = _membership(outsider, other_organization)
    with pytest.raises(NotFound):
        membership_change_role(
            actor=owner, organization=organization, membership_id=foreign.pk, role=Role.MEMBER
        )
    with pytest.raises(NotFound):
        membership_remove(actor=owner, organization=organization, membership_id=foreign.pk)
    assert _membership(outsider, other_organization).role == Role.OWNER


# --- removing members ----------------------------------------------------------------------


def test_member_cannot_remove_others(organization, owner, admin_user, member):
    before = _roles(organization)
    for target in (owner, admin_user):
        with pytest.raises(PermissionDenied):
            membership_remove(
                actor=member,
                organization=organization,
                membership_id=_membership(target, organization).pk,
            )
    assert _roles(organization) == before


def test_member_may_leave(organization, owner, member):
    membership_remove(
        actor=member, organization=organization, membership_id=_membership(member, organization).pk
    )
    assert _roles(organization) == {owner.email: Role.OWNER}


def test_admin_removes_a_member_but_not_an_owner(organization, owner, admin_user, member):
    membership_remove(
        actor=admin_user,
        organization=organization,
        membership_id=_membership(member, organization).pk,
    )
    with pytest.raises(PermissionDenied) as excinfo:
        membership_remove(
            actor=admin_user,
            organization=organization,
            membership_id=_membership(owner, organization).pk,
        )
    assert excinfo.value.message == "Only an owner can remove an owner."
    assert _roles(organization) == {owner.email: Role.OWNER, admin_user.email: Role.ADMIN}


def test_last_owner_cannot_leave(organization, owner, member):
    with pytest.raises(Conflict):
        membership_remove(
            actor=owner,
            organization=organization,
            membership_id=_membership(owner, organization).pk,
        )
    assert _roles(organization) == {owner.email: Role.OWNER, member.email: Role.MEMBER}


# --- outsiders -----------------------------------------------------------------------------


def test_outsider_cannot_see_or_change_the_organization(organization, owner, member, outsider):
    before_roles = _roles(organization)
    before_name = organization.name
    attempts = [
        lambda: organization_rename(actor=outsider, organization=organization, name="Pwned"),
        lambda: membership_change_role(
            actor=outsider,
            organization=organization,
            membership_id=_membership(member, organization).pk,
            role=Role.OWNER,
        ),
        lambda: membership_change_role(
            actor=outsider,
            organization=organization,
            membership_id=_membership(owner, organization).pk,
            role=Role.MEMBER,
        ),
        lambda: membership_remove(
            actor=outsider,
            organization=organization,
            membership_id=_membership(member, organization).pk,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound) as excinfo:
            attempt()
        assert excinfo.value.message == "Organization not found."
    organization.refresh_from_db()
    assert organization.name == before_name
    assert _roles(organization) == before_roles
    assert organization not in organization_list_for_user(user=outsider)


def test_admin_renames_member_cannot(organization, admin_user, member):
    organization_rename(actor=admin_user, organization=organization, name=" Acme Studio ")
    with pytest.raises(PermissionDenied):
        organization_rename(actor=member, organization=organization, name="Mine")
    organization.refresh_from_db()
    assert organization.name == "Acme Studio"


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner():
    first = UserFactory()
    organization = organization_create(name="Race", owner=first)
    second = MembershipFactory(organization=organization, role=Role.OWNER).user
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor, target) -> None:
        try:
            barrier.wait(timeout=5)
            membership_change_role(
                actor=actor,
                organization=organization,
                membership_id=_membership(target, organization).pk,
                role=Role.MEMBER,
            )
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")
        except PermissionDenied:  # the other one won first and made this actor a member
            outcomes.append("denied")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=demote, args=(first, second)),
        threading.Thread(target=demote, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(outcomes) == 2
    assert outcomes.count("ok") == 1
    assert set(outcomes) - {"ok"} <= {"conflict", "denied"}
    assert Membership.objects.filter(organization=organization, role=Role.OWNER).count() == 1
