"""Native v1 API (SPEC §6.3)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.billing.selectors import balance_get
from apps.core.api import OrganizationAPIView


class BalanceView(OrganizationAPIView):
    required_key_flags = ("billing_read",)

    @extend_schema(
        summary="Token balance",
        responses=inline_serializer(
            "Balance",
            {"available": serializers.IntegerField(), "held": serializers.IntegerField()},
        ),
    )
    def get(self, request: Request) -> Response:
        balance = balance_get(organization=self.organization)
        return Response({"available": balance.available, "held": balance.held})
