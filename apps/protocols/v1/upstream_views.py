"""Native v1: the organization's own upstream accounts (bring your own accounts, issue #18).

Any key of the organization may read; adding, changing and removing need a key that is not
read-only. Credentials are write-only: a response says whether some are stored, never what.
Another organization's account, or one of the shared pool, answers exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrganizationAPIView
from apps.core.fields import StrictFieldsMixin
from apps.core.schema import IDEMPOTENCY_HEADER
from apps.engines.models import UpstreamAccount
from apps.engines.own_selectors import own_account_get, own_account_list, own_account_state
from apps.engines.own_services import (
    OWN_ACCOUNT_ENGINES,
    OWN_ACCOUNT_MAX_CONCURRENCY,
    OWN_ACCOUNT_MAX_QUEUE,
    own_account_create,
    own_account_delete,
    own_account_set_enabled,
    own_account_update,
)
from apps.tasks.enums import Mode

ERROR = inline_serializer(
    "UpstreamAccountError",
    {
        "error": inline_serializer(
            "UpstreamAccountErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(allow_null=True),
            },
        )
    },
)


def _errors(*codes: int) -> dict[int, Any]:
    return {code: OpenApiResponse(ERROR) for code in codes}


class UpstreamAccountSerializer(serializers.ModelSerializer):
    credentials_set = serializers.SerializerMethodField(
        help_text="Whether credentials are stored (they are never shown)."
    )
    running = serializers.SerializerMethodField(help_text="Jobs holding a slot now.")
    serving = serializers.SerializerMethodField(
        help_text="The modes it takes new work for now (empty: none, see health)."
    )
    health_reason = serializers.SerializerMethodField()
    last_error = serializers.SerializerMethodField()

    class Meta:
        model = UpstreamAccount
        fields: tuple[str, ...] = (
            "id",
            "name",
            "engine",
            "modes",
            "concurrency",
            "queue_size",
            "options",
            "credentials_set",
            "is_enabled",
            "health",
            "health_reason",
            "health_changed_at",
            "cooldown_until",
            "serving",
            "running",
            "total_submitted",
            "total_succeeded",
            "total_failed",
            "last_error",
            "last_used_at",
            "created_at",
            "updated_at",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_credentials_set(self, account: UpstreamAccount) -> bool:
        return bool(account.secrets)

    def get_running(self, account: UpstreamAccount) -> int:
        return own_account_state(account).running

    def get_serving(self, account: UpstreamAccount) -> list[str]:
        return own_account_state(account, now=self.context.get("now")).serving

    def get_health_reason(self, account: UpstreamAccount) -> str | None:
        return account.health_reason or None

    def get_last_error(self, account: UpstreamAccount) -> str | None:
        return account.last_error or None


class UpstreamAccountWriteSerializer(StrictFieldsMixin, serializers.Serializer):
    # Only the shape here; the engine's own rules are the service's job.
    name = serializers.CharField(max_length=100)
    engine = serializers.CharField(
        max_length=32, help_text=f"One of: {', '.join(OWN_ACCOUNT_ENGINES)}."
    )
    modes = serializers.ListField(
        child=serializers.CharField(max_length=16),
        min_length=1,
        max_length=len(Mode.values),
        help_text="Modes it serves: FAST, RELAX, TURBO.",
    )
    concurrency = serializers.IntegerField(
        required=False, min_value=1, max_value=OWN_ACCOUNT_MAX_CONCURRENCY
    )
    queue_size = serializers.IntegerField(
        required=False, min_value=0, max_value=OWN_ACCOUNT_MAX_QUEUE
    )
    options = serializers.DictField(
        required=False,
        help_text='The engine\'s options, e.g. {"base_url": "https://…"} for mjproxy.',
    )
    secrets = serializers.DictField(
        required=False,
        write_only=True,
        help_text='Write-only credentials, e.g. {"secret": "…"} (mjproxy) or {"token": "…"} '
        "(discord); stored encrypted, never shown again.",
    )


class UpstreamAccountUpdateSerializer(UpstreamAccountWriteSerializer):
    name = serializers.CharField(max_length=100, required=False)
    engine = None  # type: ignore[assignment]  # fixed once created
    modes = serializers.ListField(
        child=serializers.CharField(max_length=16),
        min_length=1,
        max_length=len(Mode.values),
        required=False,
    )
    secrets = serializers.DictField(
        required=False,
        allow_null=True,
        write_only=True,
        help_text="Replaces the stored credentials; `{}` removes them; left out keeps them.",
    )
    is_enabled = serializers.BooleanField(required=False)


def _body(account: UpstreamAccount) -> dict[str, Any]:
    return dict(UpstreamAccountSerializer(account, context={"now": timezone.now()}).data)


class UpstreamAccountListView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="The organization's own upstream accounts",
        operation_id="v1_upstream_accounts_list",
        responses={200: UpstreamAccountSerializer(many=True), **_errors(401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        accounts = own_account_list(organization=self.organization)
        return Response(UpstreamAccountSerializer(accounts, many=True, context={"now": now}).data)

    @extend_schema(
        summary="Add an upstream account of your own",
        description=(
            "On plans that allow it. The account runs only this organization's tasks that ask "
            "for the `own` or `own_then_shared` pool (a key's default, the `X-Mjgate-Pool` "
            "header, or the `pool` field). Addresses must be public."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=UpstreamAccountWriteSerializer,
        responses={
            201: UpstreamAccountSerializer,
            **_errors(400, 401, 403, 409, 422, 429),
        },
    )
    def post(self, request: Request) -> Response:
        body = UpstreamAccountWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        account = own_account_create(
            organization=self.organization,
            engine=data["engine"],
            name=data["name"],
            modes=list(data["modes"]),
            concurrency=data.get("concurrency", 3),
            queue_size=data.get("queue_size", 10),
            options=data.get("options"),
            secrets=data.get("secrets"),
        )
        account = own_account_get(organization=self.organization, account_id=account.pk)
        return Response(_body(account), status=status.HTTP_201_CREATED)


class UpstreamAccountDetailView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Get one of your own upstream accounts",
        responses={200: UpstreamAccountSerializer, **_errors(401, 403, 404, 429)},
    )
    def get(self, request: Request, account_id: str) -> Response:
        account = own_account_get(organization=self.organization, account_id=account_id)
        return Response(_body(account))

    @extend_schema(
        summary="Change one of your own upstream accounts",
        description="`is_enabled: false` stops new work going to it; running jobs finish.",
        request=UpstreamAccountUpdateSerializer,
        responses={200: UpstreamAccountSerializer, **_errors(400, 401, 403, 404, 409, 429)},
    )
    def patch(self, request: Request, account_id: str) -> Response:
        account = own_account_get(organization=self.organization, account_id=account_id)
        body = UpstreamAccountUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        settings_given = set(data) - {"is_enabled"}
        if settings_given:
            account = own_account_update(
                organization=self.organization,
                account_id=account.pk,
                name=data.get("name"),
                modes=list(data["modes"]) if "modes" in data else None,
                concurrency=data.get("concurrency"),
                queue_size=data.get("queue_size"),
                options=data.get("options"),
                secrets=data.get("secrets"),
            )
        if "is_enabled" in data:
            account = own_account_set_enabled(
                organization=self.organization, account_id=account.pk, enabled=data["is_enabled"]
            )
        return Response(_body(account))

    @extend_schema(
        summary="Remove one of your own upstream accounts",
        description="Refused (409) while it runs jobs: switch it off and let them finish.",
        responses={204: None, **_errors(401, 403, 404, 409, 429)},
    )
    def delete(self, request: Request, account_id: str) -> Response:
        own_account_delete(organization=self.organization, account_id=account_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
