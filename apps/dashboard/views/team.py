"""Members, roles and invitations; the page an e-mailed invitation link opens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.models import Role
from apps.accounts.roles import Capability, role_allows
from apps.accounts.selectors import invitation_list, membership_list
from apps.accounts.services import (
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)
from apps.core.errors import NotFound, ServiceError

from ..selectors import invitation_get_by_token
from ..tenancy import dashboard_view, membership_of, organization_of, organization_switch


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail address")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


def _page(
    request: HttpRequest, *, form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    organization = organization_of(request)
    membership = membership_of(request)
    return render(
        request,
        "dashboard/team.html",
        {
            "members": list(membership_list(organization=organization)),
            "invitations": [i for i in invitation_list(organization=organization) if i.is_open],
            "form": form or InviteForm(),
            "roles": Role.choices,
            "can_manage": role_allows(membership.role, Capability.MANAGE_MEMBERS),
            "nav": "team",
        },
        status=status,
    )


@require_GET
@dashboard_view()
def index(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@dashboard_view(Capability.MANAGE_MEMBERS)
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation, _token = invitation_create(
                actor=request.user,  # type: ignore[arg-type]
                organization=organization_of(request),
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
            )
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("dashboard:team")
    return _page(request, form=form, status=400)


@require_POST
@dashboard_view(Capability.MANAGE_MEMBERS)
def invitation_cancel(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation_revoke(
        actor=request.user,  # type: ignore[arg-type]
        organization=organization_of(request),
        invitation_id=invitation_id,
    )
    messages.success(request, "Invitation revoked.")
    return redirect("dashboard:team")


@require_POST
@dashboard_view(Capability.MANAGE_MEMBERS)
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    try:
        changed = membership_change_role(
            actor=request.user,  # type: ignore[arg-type]
            membership_id=membership_id,
            organization=organization_of(request),
            role=request.POST.get("role", ""),
        )
    except ServiceError as exc:
        if isinstance(exc, NotFound):
            raise
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"{changed.user.email} is now {changed.get_role_display().lower()}."
        )
    return redirect("dashboard:team")


@require_POST
@dashboard_view()  # anyone may leave; removing someone else is checked by the service
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    leaving = membership_of(request).pk == membership_id
    try:
        membership_remove(
            actor=request.user,  # type: ignore[arg-type]
            membership_id=membership_id,
            organization=organization_of(request),
        )
    except ServiceError as exc:
        if isinstance(exc, NotFound):
            raise
        messages.error(request, exc.message)
        return redirect("dashboard:team")
    if leaving:
        messages.success(request, "You left the organization.")
        return redirect("dashboard:overview")
    messages.success(request, "Member removed.")
    return redirect("dashboard:team")


def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """Where the e-mailed link lands. Anyone holding the link may see whose invitation it is."""
    try:
        invitation = invitation_get_by_token(token=token)
    except NotFound:
        return render(request, "dashboard/invitation.html", {"missing": True}, status=404)
    context = {"invitation": invitation, "token": token, "error": ""}
    if request.method == "POST" and request.user.is_authenticated:
        try:
            membership = invitation_accept(token=token, user=request.user)
        except ServiceError as exc:
            context["error"] = exc.message
            return render(request, "dashboard/invitation.html", context, status=exc.http_status)
        organization_switch(request, organization_id=membership.organization_id)
        messages.success(request, f"Welcome to {membership.organization.name}!")
        return redirect("dashboard:overview")
    return render(request, "dashboard/invitation.html", context)
