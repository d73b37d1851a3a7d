"""Native v1 billing endpoints (SPEC §6.3): ledger, prices and plan. Reads only."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import ledger_list, plan_get, price_table_get
from apps.core.api import OrganizationAPIView

from .pagination import IdCursorPagination
from .views import _errors


class LedgerQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=EntryKind.choices, required=False)
    task = serializers.RegexField(r"^[0-9]{1,32}$", required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)


class LedgerEntrySerializer(serializers.ModelSerializer):
    amount = serializers.IntegerField(read_only=True)
    task = serializers.CharField(source="task_id", allow_null=True, read_only=True)

    class Meta:
        model = LedgerEntry
        fields = (
            "id",
            "kind",
            "amount",
            "delta_available",
            "delta_held",
            "available_after",
            "held_after",
            "task",
            "reason",
            "created_at",
        )
        read_only_fields = fields


class LedgerPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null.")
    results = LedgerEntrySerializer(many=True)


class LedgerView(OrganizationAPIView):
    query_params = tuple(LedgerQuerySerializer().fields)
    required_key_flags = ("billing_read",)

    @extend_schema(
        summary="Ledger entries, newest first",
        description=(
            "Every movement of the organization's tokens: top-ups, the sign-up grant, holds "
            "taken when a task is accepted, captures (a task succeeded) and releases (it failed "
            "or was cancelled), operator adjustments, refunds and disputes (a card payment's "
            "chargeback takes its tokens back; a won dispute gives them back). `amount` is the "
            "size of the movement; `delta_available`/`delta_held` are signed and "
            "`available_after`/`held_after` the balance right after it. Cursor-paginated."
        ),
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=EntryKind.values),
            OpenApiParameter("task", OpenApiTypes.STR, description="Only entries of this task."),
            OpenApiParameter("cursor", OpenApiTypes.STR, description="From `next`/`previous`."),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1–200, default 50."),
        ],
        responses={200: LedgerPageSerializer, **_errors(400, 401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        query = LedgerQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entries = ledger_list(
            organization=self.organization,
            kind=query.validated_data.get("kind"),
            task_id=query.validated_data.get("task"),
        )
        paginator = IdCursorPagination(page_size=50, max_page_size=200)
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(LedgerEntrySerializer(page, many=True).data)


class PricesView(OrganizationAPIView):
    required_key_flags = ("billing_read",)

    @extend_schema(
        summary="Tokens per successful task, by action and mode",
        description=(
            "`prices[action][mode]` is charged only when a task succeeds (held while it runs). "
            "`allowed_modes` are the modes the organization's plan may use. "
            "`own_account_fees[action][mode]` is the platform fee charged instead when one of "
            "the organization's own upstream accounts runs the task "
            "(`own_accounts_allowed`: whether its plan includes them)."
        ),
        responses={
            200: inline_serializer(
                "PriceTable",
                {
                    "unit": serializers.CharField(),
                    "tokens_per_cny": serializers.IntegerField(),
                    "modes": serializers.ListField(child=serializers.CharField()),
                    "allowed_modes": serializers.ListField(child=serializers.CharField()),
                    "prices": serializers.DictField(
                        child=serializers.DictField(child=serializers.IntegerField())
                    ),
                    "own_account_fees": serializers.DictField(
                        child=serializers.DictField(child=serializers.IntegerField())
                    ),
                    "own_accounts_allowed": serializers.BooleanField(),
                },
            ),
            **_errors(401, 403, 429),
        },
    )
    def get(self, request: Request) -> Response:
        table = price_table_get(organization=self.organization)
        return Response(
            {
                "unit": "tokens",
                "tokens_per_cny": table.tokens_per_cny,
                "modes": table.modes,
                "allowed_modes": table.allowed_modes,
                "prices": table.prices,
                "own_account_fees": table.own_account_fees,
                "own_accounts_allowed": table.own_accounts_allowed,
            }
        )


class PlanView(OrganizationAPIView):
    required_key_flags = ("billing_read",)

    @extend_schema(
        summary="The organization's membership tier and current use",
        description=(
            "`unfinished_tasks` counts queued, submitted and running tasks against "
            "`max_unfinished_tasks`; a submit beyond the limit answers 429."
        ),
        responses={
            200: inline_serializer(
                "Plan",
                {
                    "code": serializers.CharField(),
                    "name": serializers.CharField(),
                    "max_unfinished_tasks": serializers.IntegerField(),
                    "allowed_modes": serializers.ListField(child=serializers.CharField()),
                    "unfinished_tasks": serializers.IntegerField(),
                },
            ),
            **_errors(401, 403, 429),
        },
    )
    def get(self, request: Request) -> Response:
        plan = plan_get(organization=self.organization)
        return Response(
            {
                "code": plan.code,
                "name": plan.name,
                "max_unfinished_tasks": plan.max_unfinished_tasks,
                "allowed_modes": plan.allowed_modes,
                "unfinished_tasks": plan.unfinished_tasks,
            }
        )
