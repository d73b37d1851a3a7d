"""``GET /api/v1/status``: the public state of each mode. No key, no tenant data."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.monitoring.selectors import PUBLIC_STATUS_SECONDS, public_status


class StatusView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes: list[type] = []

    @extend_schema(
        summary="Service status by mode (public)",
        description=(
            "Each mode's state (`operational`, `degraded` or `down`), how many tasks are queued "
            "and the median wait from acceptance to start over the last 15 minutes. Needs no "
            f"key and says nothing about any customer; refreshed every {PUBLIC_STATUS_SECONDS} s."
        ),
        auth=[],
        responses={
            200: inline_serializer(
                "ServiceStatus",
                {
                    "status": serializers.ChoiceField(["operational", "degraded", "down"]),
                    "updated_at": serializers.DateTimeField(),
                    "window_minutes": serializers.IntegerField(),
                    "modes": inline_serializer(
                        "ModeStatus",
                        {
                            "mode": serializers.CharField(),
                            "status": serializers.ChoiceField(["operational", "degraded", "down"]),
                            "queue_depth": serializers.IntegerField(),
                            "median_wait_seconds": serializers.FloatField(allow_null=True),
                        },
                        many=True,
                    ),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        response = Response(public_status(now=timezone.now()))
        response["Cache-Control"] = f"public, max-age={PUBLIC_STATUS_SECONDS}"
        return response
