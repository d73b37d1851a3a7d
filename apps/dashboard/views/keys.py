"""API keys: list, create with flags (the secret is shown once, in the response), revoke."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.roles import Capability
from apps.api_keys.selectors import api_key_get, api_key_list
from apps.api_keys.services import api_key_create, api_key_revoke
from apps.core.errors import ServiceError
from apps.tasks.enums import Pool

from ..tenancy import dashboard_view, organization_of


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name")
    is_test = forms.BooleanField(
        required=False,
        label="Test key",
        help_text="Runs on the free sandbox, never charges tokens.",
    )
    can_midjourney = forms.BooleanField(
        required=False, initial=True, label="Midjourney", help_text="Submit, fetch and list tasks."
    )
    read_only = forms.BooleanField(
        required=False, label="Read-only", help_text="May fetch and list but not submit."
    )
    can_read_billing = forms.BooleanField(
        required=False, initial=True, label="Billing read", help_text="Balance, ledger and plan."
    )
    remix = forms.BooleanField(
        required=False,
        label="Remix by default",
        help_text="Variations, rerolls and pans ask for the (changed) prompt first, unless a "
        "request says otherwise (enableRemix, remix).",
    )
    pool = forms.ChoiceField(
        choices=Pool.choices,
        initial=Pool.SHARED,
        required=False,
        label="Upstream pool",
        help_text="Whose upstream accounts run this key's new tasks, unless a request says "
        "otherwise (X-Mjgate-Pool). Own accounts need a plan that includes them.",
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working at the end of this day (UTC).",
    )
    allowed_ips = forms.CharField(
        required=False,
        label="IP allow-list",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "203.0.113.7, 198.51.100.0/24"}),
        help_text="Optional. Addresses or CIDR networks, separated by commas or new lines.",
    )

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        if not day:
            return None
        return timezone.make_aware(datetime.combine(day, time.max), timezone.get_current_timezone())

    def ip_list(self) -> list[str]:
        raw = self.cleaned_data.get("allowed_ips") or ""
        return [part.strip() for part in raw.replace(",", "\n").splitlines() if part.strip()]


#: Where a just-created key waits for the page the browser is redirected to (read once).
ISSUED_SESSION_KEY = "dashboard:issued-key"
EXAMPLE_KEY = "mjg_live_…"


def developer_examples(request: HttpRequest, key: str = EXAMPLE_KEY) -> dict[str, Any]:
    """The three dialects' base URLs and a copy-paste request for each, with ``key`` in it."""
    base = settings.PUBLIC_BASE_URL or request.build_absolute_uri("/").rstrip("/")
    prompt = '{"prompt": "a lighthouse on a cliff at dawn, watercolor"}'
    return {
        "dialects": [
            (
                "Native",
                f"{base}/api/v1/",
                f"curl -s {base}/api/v1/tasks \\\n"
                f"  -H 'Authorization: Bearer {key}' \\\n"
                "  -H 'Content-Type: application/json' \\\n"
                f'  -d \'{{"action": "IMAGINE", "prompt": "a lighthouse at dawn"}}\'',
            ),
            (
                "midjourney-proxy",
                f"{base}/mj/",
                f"curl -s {base}/mj/submit/imagine \\\n"
                f"  -H 'mj-api-secret: {key}' \\\n"
                "  -H 'Content-Type: application/json' \\\n"
                f"  -d '{prompt}'",
            ),
            (
                "TTAPI",
                f"{base}/midjourney/v1/",
                f"curl -s {base}/midjourney/v1/imagine \\\n"
                f"  -H 'TT-API-KEY: {key}' \\\n"
                "  -H 'Content-Type: application/json' \\\n"
                f"  -d '{prompt}'",
            ),
        ],
        "balance_curl": f"curl -s {base}/api/v1/balance -H 'Authorization: Bearer {key}'",
    }


def _page(
    request: HttpRequest, *, form: ApiKeyForm, issued: Any = None, status: int = 200
) -> HttpResponse:
    response = render(
        request,
        "dashboard/keys.html",
        {
            "keys": list(api_key_list(organization=organization_of(request))),
            "form": form,
            "issued": issued,
            "examples": developer_examples(request, issued["plaintext"] if issued else EXAMPLE_KEY),
            "nav": "keys",
        },
        status=status,
    )
    if issued:
        # The plaintext is in this page only: no cache may keep it.
        response["Cache-Control"] = "no-store"
    return response


@require_GET
@dashboard_view(Capability.MANAGE_KEYS)
def index(request: HttpRequest) -> HttpResponse:
    # Shown once: popped from the session by the first page after the create redirect.
    issued = request.session.pop(ISSUED_SESSION_KEY, None)
    return _page(request, form=ApiKeyForm(), issued=issued)


@require_POST
@dashboard_view(Capability.MANAGE_KEYS)
def create(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            issued = api_key_create(
                organization=organization_of(request),
                name=data["name"],
                created_by=request.user,  # type: ignore[arg-type]
                is_test=data["is_test"],
                can_midjourney=data["can_midjourney"],
                read_only=data["read_only"],
                can_read_billing=data["can_read_billing"],
                remix=data["remix"],
                pool=data.get("pool") or Pool.SHARED,
                allowed_ips=form.ip_list(),
                expires_at=form.expires_at(),
            )
        except ServiceError as exc:
            field = str(exc.details.get("field") or "")
            target = {"expires_at": "expires_on"}.get(field, field)
            form.add_error(target if target in form.fields else None, exc.message)
        else:
            # Post/redirect/get, so a reload does not offer to create a second key. The
            # plaintext waits in the server-side session for exactly one page view.
            request.session[ISSUED_SESSION_KEY] = {
                "name": issued.api_key.name,
                "plaintext": issued.plaintext,
            }
            return redirect("dashboard:keys")
    return _page(request, form=form, status=400)


@require_POST
@dashboard_view(Capability.MANAGE_KEYS)
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = api_key_get(organization=organization_of(request), key_id=key_id)
    api_key_revoke(api_key=api_key)
    messages.success(
        request, f"Revoked “{api_key.name}”. Requests with it are refused from now on."
    )
    return redirect("dashboard:keys")
