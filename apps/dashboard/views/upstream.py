"""Upstream accounts of the organization's own (bring your own accounts, issue #18).

Admins and owners add, change, switch off and remove them; the page shows each one's health,
load and the reason for any failure. Credentials are write-only: the form never renders a
stored (or just-typed) credential, only whether some are stored.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.roles import Capability
from apps.billing.selectors import price_table_get
from apps.core.errors import ServiceError
from apps.engines.models import UpstreamAccount
from apps.engines.own_selectors import (
    own_account_get,
    own_account_list,
    own_account_state,
    own_queue_counts,
)
from apps.engines.own_services import (
    OWN_ACCOUNT_MAX_CONCURRENCY,
    own_account_create,
    own_account_delete,
    own_account_engines,
    own_account_set_enabled,
    own_account_update,
)
from apps.tasks.enums import Mode

from ..tenancy import dashboard_view, organization_of


def _json_object(raw: str, *, what: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise forms.ValidationError(f"{what} must be a JSON object.") from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{what} must be a JSON object.")
    return value


class OwnAccountForm(forms.Form):
    name = forms.CharField(max_length=100)
    engine = forms.ChoiceField(choices=())
    modes = forms.MultipleChoiceField(
        choices=Mode.choices, widget=forms.CheckboxSelectMultiple, label="Modes served"
    )
    concurrency = forms.IntegerField(
        min_value=1,
        max_value=OWN_ACCOUNT_MAX_CONCURRENCY,
        initial=3,
        help_text="Jobs it runs at once.",
    )
    base_url = forms.CharField(
        label="Upstream address (mjproxy)",
        required=False,
        max_length=500,
        help_text="The midjourney-proxy server's address before /mj/…; it must be public.",
    )
    secret = forms.CharField(
        label="mj-api-secret (mjproxy)",
        required=False,
        strip=True,
        # render_value=False: a credential never comes back to the page.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored one.",
    )
    options = forms.CharField(
        label="Other options (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text='Engine options, e.g. {"guild_id": "…", "channel_id": "…"} for discord.',
    )
    credentials = forms.CharField(
        label="Other credentials (JSON)",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text='Write-only, e.g. {"token": "…"} for discord. Replaces the stored ones.',
    )
    clear_credentials = forms.BooleanField(
        label="Remove stored credentials", required=False, help_text="Takes effect on save."
    )

    def __init__(self, *args: Any, account: UpstreamAccount | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.account = account
        self.fields["engine"].choices = [(name, name) for name in own_account_engines()]  # type: ignore[attr-defined]
        if account is not None:
            self.fields["engine"].disabled = True
            self.fields["engine"].help_text = "Fixed once created."
            options = dict(account.options or {})
            self.initial.update(
                name=account.name,
                engine=account.engine,
                modes=list(account.modes or []),
                concurrency=account.concurrency,
                base_url=options.pop("base_url", ""),
                options=json.dumps(options) if options else "",
            )
        else:
            self.fields["clear_credentials"].widget = forms.HiddenInput()

    def clean_options(self) -> dict[str, Any] | None:
        return _json_object(self.cleaned_data.get("options") or "", what="Options")

    def clean_credentials(self) -> dict[str, Any] | None:
        return _json_object(self.cleaned_data.get("credentials") or "", what="Credentials")

    def settings(self) -> dict[str, Any]:
        """What the service takes: options and (None: keep) credentials."""
        data = self.cleaned_data
        options = dict(data.get("options") or {})
        if data.get("base_url"):
            options["base_url"] = data["base_url"].strip()
        secrets: dict[str, Any] | None = data.get("credentials")
        if data.get("secret"):
            secrets = {**(secrets or {}), "secret": data["secret"]}
        if data.get("clear_credentials"):
            secrets = {}
        return {
            "name": data["name"],
            "modes": list(data["modes"]),
            "concurrency": data["concurrency"],
            "options": options,
            "secrets": secrets,
        }


def _rows(request: HttpRequest) -> list[dict[str, Any]]:
    now = timezone.now()
    return [
        {"account": account, "state": own_account_state(account, now=now)}
        for account in own_account_list(organization=organization_of(request))
    ]


def _page(
    request: HttpRequest, *, form: OwnAccountForm | None = None, status: int = 200
) -> HttpResponse:
    organization = organization_of(request)
    tier = organization.tier
    rows = _rows(request)
    prices = price_table_get(organization=organization)
    can_add = tier.allows_own_accounts and len(rows) < tier.max_own_accounts
    return render(
        request,
        "dashboard/upstream_accounts.html",
        {
            "rows": rows,
            "form": form or OwnAccountForm(),
            "allowed": tier.allows_own_accounts,
            "limit": tier.max_own_accounts,
            "tier_name": tier.name,
            # A refused form is shown with its errors even when no account may be added.
            "can_add": can_add or (form is not None and form.is_bound),
            "own_queued": own_queue_counts(organization=organization),
            "fees": [
                (action, prices.own_account_fees.get(action, {}), modes)
                for action, modes in sorted(prices.prices.items())
            ],
            "modes": list(Mode.values),
            "nav": "upstream",
        },
        status=status,
    )


def _form_error(form: OwnAccountForm, exc: ServiceError) -> None:
    field = str(exc.details.get("field") or "")
    if field.startswith("options."):
        field = "base_url" if field == "options.base_url" else "options"
    form.add_error(field if field in form.fields else None, exc.message)


@require_GET
@dashboard_view(Capability.MANAGE_UPSTREAM_ACCOUNTS)
def index(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@dashboard_view(Capability.MANAGE_UPSTREAM_ACCOUNTS)
def create(request: HttpRequest) -> HttpResponse:
    form = OwnAccountForm(request.POST)
    if form.is_valid():
        try:
            account = own_account_create(
                organization=organization_of(request),
                engine=form.cleaned_data["engine"],
                **form.settings(),
            )
        except ServiceError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Upstream account {account.name} added.")
            return redirect("dashboard:upstream-accounts")
    return _page(request, form=form, status=400)


@require_http_methods(["GET", "POST"])
@dashboard_view(Capability.MANAGE_UPSTREAM_ACCOUNTS)
def edit(request: HttpRequest, account_id: int) -> HttpResponse:
    organization = organization_of(request)
    account = own_account_get(organization=organization, account_id=account_id)
    status = 200
    if request.method == "POST":
        form = OwnAccountForm(request.POST, account=account)
        if form.is_valid():
            try:
                updated = own_account_update(
                    organization=organization, account_id=account.pk, **form.settings()
                )
            except ServiceError as exc:
                _form_error(form, exc)
            else:
                messages.success(request, f"Upstream account {updated.name} saved.")
                return redirect("dashboard:upstream-accounts")
        status = 400
    else:
        form = OwnAccountForm(account=account)
    return render(
        request,
        "dashboard/upstream_account_edit.html",
        {
            "account": account,
            "state": own_account_state(account),
            "form": form,
            "nav": "upstream",
        },
        status=status,
    )


@require_POST
@dashboard_view(Capability.MANAGE_UPSTREAM_ACCOUNTS)
def toggle(request: HttpRequest, account_id: int) -> HttpResponse:
    enable = request.POST.get("enable") == "1"
    account = own_account_set_enabled(
        organization=organization_of(request), account_id=account_id, enabled=enable
    )
    messages.success(request, f"{account.name} is {'enabled' if enable else 'disabled'}.")
    return redirect("dashboard:upstream-accounts")


@require_POST
@dashboard_view(Capability.MANAGE_UPSTREAM_ACCOUNTS)
def delete(request: HttpRequest, account_id: int) -> HttpResponse:
    organization = organization_of(request)
    account = own_account_get(organization=organization, account_id=account_id)
    try:
        own_account_delete(organization=organization, account_id=account.pk)
    except ServiceError as exc:
        if exc.http_status == 404:
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Upstream account {account.name} removed.")
    return redirect("dashboard:upstream-accounts")
