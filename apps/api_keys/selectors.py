from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Organization
from apps.core.errors import NotFound

from .models import ApiKey


def api_key_list(*, organization: Organization, include_revoked: bool = True) -> QuerySet[ApiKey]:
    qs = ApiKey.objects.filter(organization=organization)
    if not include_revoked:
        qs = qs.filter(revoked_at__isnull=True)
    return qs.order_by("-created_at", "-id")


def api_key_get(*, organization: Organization, key_id: object) -> ApiKey:
    try:
        return ApiKey.objects.get(organization=organization, pk=int(str(key_id)))
    except (ApiKey.DoesNotExist, ValueError) as exc:
        raise NotFound("API key not found.") from exc
