"""Organization settings: prompt translation on or off (issue 18). Admins and owners change
them; every member sees them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Capability
from apps.translation.selectors import organization_translation_choice, translator_active
from apps.translation.services import organization_translation_set

from ..tenancy import can, dashboard_view, organization_of


class TranslationForm(forms.Form):
    translate = forms.ChoiceField(
        choices=[("on", "On"), ("off", "Off")],
        widget=forms.RadioSelect,
        label="Translate prompts to English",
    )


def _page(
    request: HttpRequest, *, form: TranslationForm | None = None, status: int = 200
) -> HttpResponse:
    organization = organization_of(request)
    translator = translator_active()
    chosen = organization_translation_choice(organization=organization)
    default = translator.on_by_default if translator is not None else False
    enabled = default if chosen is None else chosen
    return render(
        request,
        "dashboard/settings.html",
        {
            "translator": translator,
            "translation_enabled": enabled,
            "translation_chosen": chosen is not None,
            "translation_default": default,
            "form": form or TranslationForm(initial={"translate": "on" if enabled else "off"}),
            "can_manage": can(request, Capability.MANAGE_SETTINGS),
            "nav": "settings",
        },
        status=status,
    )


@require_GET
@dashboard_view()
def index(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@dashboard_view(Capability.MANAGE_SETTINGS)
def translation(request: HttpRequest) -> HttpResponse:
    form = TranslationForm(request.POST)
    if not form.is_valid():
        return _page(request, form=form, status=400)
    enabled = form.cleaned_data["translate"] == "on"
    organization_translation_set(organization=organization_of(request), enabled=enabled)
    messages.success(request, f"Prompt translation is {'on' if enabled else 'off'}.")
    return redirect("dashboard:settings")
