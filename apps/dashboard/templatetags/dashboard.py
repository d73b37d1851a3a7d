from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import template
from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.accounts.models import Membership, Organization
from apps.accounts.roles import Capability, role_allows
from apps.accounts.selectors import organization_list_for_user
from apps.tasks.enums import PRICE_KEY_CHOICES, Action

from .. import presenters
from ..mailbox import mailbox_dir
from ..tenancy import PAGE_ORGANIZATION_FIELD, current_membership

register = template.Library()


@register.filter
def tokens(value: Any) -> str:
    """12345 → "12,345"."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def abs_tokens(value: Any) -> str:
    """-14000 → "14,000" (the sign is shown apart, as a real minus)."""
    try:
        return f"{abs(int(value)):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def cny(value: Any) -> str:
    """Tokens as yuan (35,000 tokens = 1 CNY)."""
    try:
        return f"¥{int(value) / settings.TOKENS_PER_CNY:,.2f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def money(amount: Any, currency: str = "") -> str:
    """Minor units and a currency code → "12.00 CNY"."""
    try:
        return f"{int(amount) / 100:,.2f} {str(currency).upper()}".strip()
    except (TypeError, ValueError):
        return "—"


@register.filter
def action_label(value: str) -> str:
    try:
        return str(Action(value).label)
    except ValueError:
        # A price key of its own (IMAGINE_DRAFT …) has a label too.
        return str(dict(PRICE_KEY_CHOICES).get(value, value))


@register.filter
def url_host(url: str) -> str:
    """Only the host of a URL: where a full webhook URL (which may carry a token) is not for
    every role to read."""
    return urlsplit(str(url or "")).netloc or "—"


@register.filter
def status_tone(status: str) -> str:
    return presenters.STATUS_TONE.get(status, "neutral")


@register.filter
def file_url(name: str | None) -> str | None:
    return presenters.file_url(name)


@register.filter
def index(items: Any, position: int) -> Any:
    try:
        return items[position]
    except (IndexError, KeyError, TypeError):
        return None


@register.filter
def task_cost(task: Any) -> presenters.Cost:
    return presenters.task_cost(task)


@register.simple_tag(takes_context=True)
def current_org_membership(context: dict[str, Any]) -> Membership | None:
    request = context.get("request")
    return current_membership(request) if request is not None else None


@register.simple_tag(takes_context=True)
def page_organization(context: dict[str, Any]) -> SafeString:
    """The hidden field that says which organization the page was rendered for: every
    dashboard POST form carries it next to ``{% csrf_token %}``, and the server refuses a write
    from a page of another organization (``tenancy.stale_page_refusal``)."""
    request = context.get("request")
    membership = current_membership(request) if request is not None else None
    if membership is None:
        return SafeString("")
    return format_html(
        '<input type="hidden" name="{}" value="{}">',
        PAGE_ORGANIZATION_FIELD,
        membership.organization_id,
    )


@register.simple_tag(takes_context=True)
def user_organizations(context: dict[str, Any]) -> list[Organization]:
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return []
    return list(organization_list_for_user(user=request.user))


@register.simple_tag(takes_context=True)
def allowed(context: dict[str, Any], capability: str) -> bool:
    request = context.get("request")
    membership = current_membership(request) if request is not None else None
    return membership is not None and role_allows(membership.role, Capability(capability))


@register.simple_tag
def mailbox_enabled() -> bool:
    """Whether this is a development server with the local mailbox."""
    return mailbox_dir() is not None
