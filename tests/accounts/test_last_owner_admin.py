"""The operator admin keeps an owner in every active organization, as the dashboard does.

Every way the admin has of taking an owner away is tried through the registered admins: a
membership's own page (role, delete), the membership list's bulk delete, the membership inline
on the organization's and on the user's page, and deleting the owner's user (page and bulk). A
refusal changes nothing and says why; a disabled organization may lose its owner but is not
enabled again without one; deleting a whole organization is not refused. The last test races
two operators removing an organization's last two owners at once.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client

from apps.accounts import services as account_services
from apps.accounts.models import Membership, MembershipTier, Organization, Role, User
from apps.operator.models import AuditEntry
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

from .admin_forms import form_data

pytestmark = pytest.mark.django_db

LEFT_WITHOUT = (
    "Nothing was changed. Acme would be left without an owner: make another member an owner "
    "first, or disable the organization."
)


@pytest.fixture
def operator() -> User:
    return UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def post(client: Client, url: str, data: dict[str, Any]) -> Any:
    """A form post whose messages are its own (none left over in the cookie from the last)."""
    client.cookies.pop("messages", None)
    return client.post(url, data)


def _membership(user: User, organization: Organization) -> Membership:
    return Membership.objects.get(user=user, organization=organization)


def _roles(organization: Organization) -> dict[str, str]:
    return dict(
        Membership.objects.filter(organization=organization).values_list("user__email", "role")
    )


def _inline_row(data: dict[str, list[str]], user: User) -> str:
    """The form prefix (``memberships-N``) of the inline row showing ``user``."""
    for key, value in data.items():
        if key.startswith("memberships-") and key.endswith("-user") and value == [str(user.pk)]:
            return key.removesuffix("-user")
    raise AssertionError(f"no inline row for {user}")


def _inline_row_of_org(data: dict[str, list[str]], membership: Membership) -> str:
    """The user page's inline row of ``membership`` (the row's hidden id)."""
    for key, value in data.items():
        if key.startswith("memberships-") and key.endswith("-id") and value == [str(membership.pk)]:
            return key.removesuffix("-id")
    raise AssertionError(f"no inline row for {membership}")


# --- a membership's own page ---------------------------------------------------------------------


def test_the_last_owner_is_not_demoted_on_the_membership_page(
    staff_client, organization, owner, member
):
    membership = _membership(owner, organization)
    url = f"/admin/accounts/membership/{membership.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "membership_form")
    data["role"] = [Role.ADMIN]
    before = _roles(organization)

    response = post(staff_client, url, data)

    assert response.status_code == 302 and response["Location"] == url
    assert messages_of(response) == [LEFT_WITHOUT]
    assert _roles(organization) == before
    assert not AuditEntry.objects.exists()


def test_an_owner_is_demoted_while_another_owner_remains(staff_client, organization, owner):
    second = MembershipFactory(organization=organization, role=Role.OWNER).user
    membership = _membership(owner, organization)
    url = f"/admin/accounts/membership/{membership.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "membership_form")
    data["role"] = [Role.MEMBER]

    response = post(staff_client, url, data)

    assert response.status_code == 302 and response["Location"] != url
    assert _roles(organization) == {owner.email: Role.MEMBER, second.email: Role.OWNER}
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.before, entry.after) == (
        "admin.change",
        {"role": Role.OWNER},
        {"role": Role.MEMBER},
    )


def test_the_last_owner_is_not_moved_to_another_organization(
    staff_client, organization, other_organization, owner
):
    membership = _membership(owner, organization)
    url = f"/admin/accounts/membership/{membership.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "membership_form")
    data["organization"] = [str(other_organization.pk)]

    response = post(staff_client, url, data)

    assert messages_of(response) == [LEFT_WITHOUT]
    assert Membership.objects.get(pk=membership.pk).organization == organization


def test_the_last_owners_membership_is_not_deleted(staff_client, organization, owner, member):
    membership = _membership(owner, organization)

    response = post(
        staff_client, f"/admin/accounts/membership/{membership.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/admin/accounts/membership/{membership.pk}/change/"
    assert messages_of(response) == [LEFT_WITHOUT]
    assert Membership.objects.filter(pk=membership.pk).exists()
    assert not AuditEntry.objects.exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_bulk_deleting_both_owners_is_refused_but_one_of_them_is_not(
    staff_client, organization, owner, member
):
    second = MembershipFactory(organization=organization, role=Role.OWNER).user
    both = [_membership(owner, organization).pk, _membership(second, organization).pk]
    url = "/admin/accounts/membership/"

    response = post(
        staff_client, url, {"action": "delete_selected", "_selected_action": both, "post": "yes"}
    )

    assert response.status_code == 302
    # Neither "Successfully deleted" nor a deletion in the admin's log: nothing was.
    assert messages_of(response) == [LEFT_WITHOUT]
    assert Membership.objects.filter(pk__in=both).count() == 2
    assert not AuditEntry.objects.exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()

    response = post(
        staff_client,
        url,
        {"action": "delete_selected", "_selected_action": both[:1], "post": "yes"},
    )
    assert messages_of(response) == ["Successfully deleted 1 membership."]
    assert _roles(organization) == {second.email: Role.OWNER, member.email: Role.MEMBER}


# --- the inlines ---------------------------------------------------------------------------------


def test_the_organization_page_does_not_demote_or_remove_the_last_owner(
    staff_client, organization, owner, member
):
    url = f"/admin/accounts/organization/{organization.pk}/change/"
    before = _roles(organization)
    page = form_data(staff_client.get(url).content.decode(), "organization_form")
    owner_row = _inline_row(page, owner)

    premium = str(MembershipTier.objects.get(code="PREMIUM").pk)
    demote = {**page, f"{owner_row}-role": [Role.ADMIN], "tier": [premium]}
    response = post(staff_client, url, demote)
    assert response.status_code == 302 and response["Location"] == url
    assert messages_of(response) == [LEFT_WITHOUT]

    remove = {**page, f"{owner_row}-DELETE": ["on"], "tier": [premium]}
    response = post(staff_client, url, remove)
    assert messages_of(response) == [LEFT_WITHOUT]

    # The organization's own change in the same form was rolled back too.
    organization.refresh_from_db()
    assert organization.tier.code == "FREE"
    assert _roles(organization) == before
    assert not AuditEntry.objects.exists()


def test_the_organization_page_hands_ownership_over_in_one_save(
    staff_client, organization, owner, member
):
    url = f"/admin/accounts/organization/{organization.pk}/change/"
    page = form_data(staff_client.get(url).content.decode(), "organization_form")
    page[f"{_inline_row(page, owner)}-role"] = [Role.MEMBER]
    page[f"{_inline_row(page, member)}-role"] = [Role.OWNER]

    response = post(staff_client, url, page)

    assert response.status_code == 302 and response["Location"] != url
    assert _roles(organization) == {owner.email: Role.MEMBER, member.email: Role.OWNER}


def test_the_user_page_does_not_demote_the_last_owner(staff_client, organization, owner, member):
    url = f"/admin/accounts/user/{owner.pk}/change/"
    page = form_data(staff_client.get(url).content.decode(), "user_form")
    row = _inline_row_of_org(page, _membership(owner, organization))
    before = _roles(organization)

    response = post(staff_client, url, {**page, f"{row}-role": [Role.MEMBER]})

    assert response.status_code == 302 and response["Location"] == url
    assert messages_of(response) == [LEFT_WITHOUT]
    assert _roles(organization) == before

    response = post(staff_client, url, {**page, f"{row}-DELETE": ["on"]})
    assert messages_of(response) == [LEFT_WITHOUT]
    assert _roles(organization) == before


# --- deleting the owner's user -------------------------------------------------------------------


def test_the_last_owners_user_is_not_deleted(staff_client, organization, owner, member):
    response = post(staff_client, f"/admin/accounts/user/{owner.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == f"/admin/accounts/user/{owner.pk}/change/"
    assert messages_of(response) == [LEFT_WITHOUT]
    assert User.objects.filter(pk=owner.pk).exists()
    assert _membership(owner, organization).role == Role.OWNER

    response = post(
        staff_client,
        "/admin/accounts/user/",
        {"action": "delete_selected", "_selected_action": [owner.pk, member.pk], "post": "yes"},
    )
    assert messages_of(response) == [LEFT_WITHOUT]
    assert User.objects.filter(pk__in=[owner.pk, member.pk]).count() == 2
    assert not AuditEntry.objects.exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_an_owners_user_is_deleted_while_another_owner_remains(
    staff_client, organization, owner, member
):
    second = MembershipFactory(organization=organization, role=Role.OWNER).user

    response = post(staff_client, f"/admin/accounts/user/{owner.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302 and response["Location"] == "/admin/accounts/user/"
    assert not User.objects.filter(pk=owner.pk).exists()
    assert _roles(organization) == {second.email: Role.OWNER, member.email: Role.MEMBER}


def test_the_message_names_every_organization_left_without_an_owner(
    staff_client, organization, owner
):
    """A user who alone owns two organizations: both are named (and the refusal holds even
    where the owner is the organization's only member)."""
    second = OrganizationFactory(name="Bravo")
    MembershipFactory(organization=second, user=owner, role=Role.OWNER)

    response = post(staff_client, f"/admin/accounts/user/{owner.pk}/delete/", {"post": "yes"})

    assert messages_of(response) == [
        LEFT_WITHOUT
        + " Bravo would be left without an owner: make another member an owner first, or "
        "disable the organization."
    ]
    assert User.objects.filter(pk=owner.pk).exists()


# --- disabled and deleted organizations ----------------------------------------------------------


def test_a_disabled_organization_may_lose_its_owner_but_is_not_enabled_without_one(
    staff_client, organization, owner, member
):
    Organization.objects.filter(pk=organization.pk).update(is_active=False)

    # A disabled organization is out of service: its owner's user can be erased.
    response = post(staff_client, f"/admin/accounts/user/{owner.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not User.objects.filter(pk=owner.pk).exists()
    assert _roles(organization) == {member.email: Role.MEMBER}

    url = f"/admin/accounts/organization/{organization.pk}/change/"
    page = form_data(staff_client.get(url).content.decode(), "organization_form")
    response = post(staff_client, url, {**page, "is_active": ["on"]})
    assert messages_of(response) == [
        "Nothing was changed. Acme has no owner, so it cannot be enabled: make a member an "
        "owner first."
    ]
    organization.refresh_from_db()
    assert organization.is_active is False

    # The owner first, then the organization is enabled.
    page[f"{_inline_row(page, member)}-role"] = [Role.OWNER]
    assert post(staff_client, url, page).status_code == 302
    response = post(staff_client, url, {**page, "is_active": ["on"]})
    assert response.status_code == 302 and response["Location"] != url
    organization.refresh_from_db()
    assert organization.is_active is True
    assert _roles(organization) == {member.email: Role.OWNER}


def test_an_organization_already_without_an_owner_can_still_be_edited(
    staff_client, organization, member
):
    """Not the operator's edit that left it so: a rename is not held against it."""
    url = f"/admin/accounts/organization/{organization.pk}/change/"
    page = form_data(staff_client.get(url).content.decode(), "organization_form")

    response = post(staff_client, url, {**page, "name": ["Acme Studio"]})

    assert response.status_code == 302 and response["Location"] != url
    organization.refresh_from_db()
    assert organization.name == "Acme Studio"


def test_deleting_a_whole_organization_is_not_refused(staff_client, organization, owner, member):
    response = post(
        staff_client, f"/admin/accounts/organization/{organization.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Organization.objects.filter(pk=organization.pk).exists()
    assert not Membership.objects.filter(user__in=[owner, member]).exists()
    assert User.objects.filter(pk__in=[owner.pk, member.pk]).count() == 2


# --- two operators at once -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_operators_removing_the_last_two_owners_at_once_leave_one(monkeypatch):
    """Each deletion alone keeps an owner. The first operator's is held after its count and
    before its commit; the second's runs meanwhile. Without the organization's row lock the
    second counts the first's owner as still there, both commit and none is left; with it the
    second waits, counts after the first committed, and is refused."""
    organization = OrganizationFactory(name="Acme")
    first = MembershipFactory(organization=organization, role=Role.OWNER)
    second = MembershipFactory(organization=organization, role=Role.OWNER)
    MembershipFactory(organization=organization, role=Role.MEMBER)
    clients = []
    for email in ("ops1@example.com", "ops2@example.com"):
        client = Client()
        client.force_login(UserFactory(email=email, is_staff=True, is_superuser=True))
        clients.append(client)

    counted, go = threading.Event(), threading.Event()
    real_ownerless = account_services._ownerless
    calls: list[int] = []

    def held_ownerless(*args: Any) -> list[str]:
        reasons = real_ownerless(*args)
        calls.append(len(reasons))
        if len(calls) == 1:  # the first operator: counted, not committed yet
            counted.set()
            assert go.wait(10)
        return reasons

    monkeypatch.setattr(account_services, "_ownerless", held_ownerless)
    responses: dict[str, Any] = {}
    errors: list[BaseException] = []

    def delete(name: str, client: Client, membership: Membership) -> None:
        try:
            responses[name] = client.post(
                f"/admin/accounts/membership/{membership.pk}/delete/", {"post": "yes"}
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    one = threading.Thread(target=delete, args=("first", clients[0], first), daemon=True)
    one.start()
    assert counted.wait(10)
    two = threading.Thread(target=delete, args=("second", clients[1], second), daemon=True)
    two.start()
    two.join(timeout=2)  # without the lock it finishes here; with it, it waits for the first
    go.set()
    one.join(timeout=10)
    two.join(timeout=10)

    assert errors == []
    assert not one.is_alive() and not two.is_alive()
    assert Membership.objects.filter(organization=organization, role=Role.OWNER).count() == 1
    assert list(Membership.objects.filter(pk__in=[first.pk, second.pk])) == [second]
    assert responses["first"]["Location"] == "/admin/accounts/membership/"
    assert responses["second"]["Location"] == f"/admin/accounts/membership/{second.pk}/change/"
    assert messages_of(responses["second"]) == [LEFT_WITHOUT]
