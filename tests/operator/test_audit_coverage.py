"""Every admin that can write is audited, including many-to-many changes (groups and
permissions) and the admins of other packages (auth groups, allauth e-mail addresses)."""

from __future__ import annotations

from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import Client, RequestFactory

from apps.operator.admin_tools import AuditedAdminMixin
from apps.operator.models import AuditEntry
from tests.factories import UserFactory

from .conftest import admin_url

pytestmark = pytest.mark.django_db


def form_data(response: Any) -> dict[str, Any]:
    """What the browser would post back for an admin change page, unchanged."""
    data: dict[str, Any] = {}
    forms = [response.context["adminform"].form]
    for formset in response.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        forms.extend(formset.formset.forms)
    for form in forms:
        for name, field in form.fields.items():
            if field.disabled:
                continue
            value = form[name].value()
            key = form.add_prefix(name)
            decompress = getattr(field.widget, "decompress", None)
            if decompress is not None:  # a split date and time: one input per part
                for index, part in enumerate(decompress(value)):
                    if part is not None:
                        data[f"{key}_{index}"] = str(part)
            elif isinstance(value, list | tuple):
                data[key] = [str(v) for v in value]
            elif isinstance(value, bool):
                if value:
                    data[key] = "on"
            elif value is not None:
                data[key] = value
    return {k: v for k, v in data.items() if v is not None}


def test_every_admin_that_can_write_is_audited(operator):
    request = RequestFactory().get("/")
    request.user = operator
    unaudited = []
    for model, model_admin in admin.site._registry.items():
        writes = (
            model_admin.has_add_permission(request)
            or model_admin.has_change_permission(request, model())
            or model_admin.has_delete_permission(request, model())
        )
        if writes and not isinstance(model_admin, AuditedAdminMixin):
            unaudited.append(model._meta.label)
    assert unaudited == []


def test_group_permissions_are_audited(operator_client):
    perms = list(
        Permission.objects.filter(
            content_type__app_label="webhooks",
            codename__in=["view_webhookdelivery", "change_webhookdelivery"],
        ).order_by("codename")
    )
    response = operator_client.post(
        admin_url("auth_group_add"), {"name": "Support", "permissions": [perms[1].pk]}
    )
    assert response.status_code == 302
    group = Group.objects.get(name="Support")
    added = AuditEntry.objects.filter(object_type="auth.group", object_id=str(group.pk))
    assert [(e.action, e.before, e.after) for e in added.order_by("id")] == [
        ("admin.add", None, {"id": group.pk, "name": "Support"}),
        ("admin.change", {"permissions": []}, {"permissions": [str(perms[1])]}),
    ]
    operator_client.post(
        admin_url("auth_group_change", group.pk),
        {"name": "Support", "permissions": [perms[0].pk, perms[1].pk]},
    )
    latest = added.order_by("-id").first()
    assert (latest.action, latest.before, latest.after) == (
        "admin.change",
        {"permissions": [str(perms[1])]},
        {"permissions": sorted([str(perms[0]), str(perms[1])])},
    )
    assert latest.actor_label == "ops@example.com"
    operator_client.post(admin_url("auth_group_delete", group.pk), {"post": "yes"})
    assert added.order_by("-id").first().action == "admin.delete"


def test_granting_a_user_groups_and_staff_is_audited(operator_client):
    user = UserFactory(email="new-ops@example.com")
    # The admin's date and time inputs show whole seconds: start from one.
    type(user).objects.filter(pk=user.pk).update(
        date_joined=user.date_joined.replace(microsecond=0)
    )
    group = Group.objects.create(name="Support")
    url = admin_url("accounts_user_change", user.pk)
    data = form_data(operator_client.get(url))
    data.update(is_staff="on", groups=[str(group.pk)])
    response = operator_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    entries = AuditEntry.objects.filter(object_type="accounts.user", object_id=str(user.pk))
    assert [(e.action, e.before, e.after) for e in entries.order_by("id")] == [
        ("admin.change", {"is_staff": False}, {"is_staff": True}),
        ("admin.change", {"groups": []}, {"groups": ["Support"]}),
    ]


def test_email_address_changes_and_verification_are_audited(operator_client):
    user = UserFactory(email="victim@example.com")
    address = EmailAddress.objects.get(user=user)
    EmailAddress.objects.filter(pk=address.pk).update(verified=False)
    url = admin_url("account_emailaddress_change", address.pk)
    data = form_data(operator_client.get(url))
    data["email"] = "attacker@example.com"
    assert operator_client.post(url, data).status_code == 302
    change = AuditEntry.objects.get(action="admin.change", object_id=str(address.pk))
    assert (change.object_type, change.before, change.after) == (
        "account.emailaddress",
        {"email": "victim@example.com"},
        {"email": "attacker@example.com"},
    )
    response = operator_client.post(
        admin_url("account_emailaddress_changelist"),
        {"action": "make_verified", "_selected_action": [str(address.pk)]},
    )
    assert response.status_code == 302
    address.refresh_from_db()
    assert address.verified is True
    verify = AuditEntry.objects.get(action="email_address.verify")
    assert (verify.object_id, verify.before, verify.after, verify.actor_label) == (
        str(address.pk),
        {"verified": False},
        {"verified": True},
        "ops@example.com",
    )
    # Already verified: nothing to do, nothing recorded.
    operator_client.post(
        admin_url("account_emailaddress_changelist"),
        {"action": "make_verified", "_selected_action": [str(address.pk)]},
    )
    assert AuditEntry.objects.filter(action="email_address.verify").count() == 1


def test_a_non_staff_user_reaches_none_of_these(owner):
    client = Client()
    client.force_login(owner)
    for url in (admin_url("auth_group_add"), admin_url("account_emailaddress_changelist")):
        assert client.get(url, follow=True).status_code == 403
