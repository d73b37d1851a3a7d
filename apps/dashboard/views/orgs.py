from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.accounts.services import organization_create
from apps.core.errors import NotFound, ServiceError

from ..tenancy import organization_switch
from .errors import section_root


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=120, label="Organization name")


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    try:
        membership = organization_switch(
            request, organization_id=request.POST.get("organization", "")
        )
    except NotFound as exc:
        raise Http404(exc.message) from exc
    messages.success(request, f"Switched to {membership.organization.name}.")
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    # A page of one of the previous organization's objects would 404 now: go to the root of
    # the same section (/tasks/123/ → /tasks/).
    return redirect(section_root(target))


@login_required
def new(request: HttpRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = organization_create(name=form.cleaned_data["name"], owner=request.user)  # type: ignore[arg-type]
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            organization_switch(request, organization_id=organization.pk)
            messages.success(request, f"Created {organization.name}.")
            return redirect("dashboard:overview")
    return render(request, "dashboard/organization_new.html", {"form": form})
