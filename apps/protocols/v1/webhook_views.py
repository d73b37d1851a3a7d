"""Native v1 webhook endpoints and delivery log (SPEC §6.3, §7).

Any key of the organization may read; changing anything needs a key that is not read-only.
Another organization's endpoint or delivery answers exactly like a missing one (404).
"""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrganizationAPIView
from apps.core.fields import StrictFieldsMixin
from apps.core.schema import IDEMPOTENCY_HEADER
from apps.webhooks import clock
from apps.webhooks.models import (
    SUBSCRIBABLE_EVENT_TYPES,
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.webhooks.selectors import (
    delivery_get,
    delivery_list,
    endpoint_get,
    endpoint_list,
    webhook_secret_status,
)
from apps.webhooks.services import (
    delivery_resend,
    endpoint_create,
    endpoint_delete,
    endpoint_send_test_event,
    endpoint_update,
    webhook_secret_rotate,
)

from .pagination import IdCursorPagination

ERROR = inline_serializer(
    "WebhookError",
    {
        "error": inline_serializer(
            "WebhookErrorBody",
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


# --- Serializers -----------------------------------------------------------------------------------


class EndpointSerializer(serializers.ModelSerializer):
    disabled_reason = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = (
            "id",
            "url",
            "description",
            "event_types",
            "is_enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "created_at",
            "updated_at",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_disabled_reason(self, endpoint: WebhookEndpoint) -> str | None:
        return endpoint.disabled_reason or None


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.SerializerMethodField(
        help_text="The organization's signing secret, only when this call created it."
    )

    class Meta(EndpointSerializer.Meta):
        fields = (*EndpointSerializer.Meta.fields, "secret")
        read_only_fields = fields

    def get_secret(self, endpoint: WebhookEndpoint) -> str | None:
        secret: str | None = self.context.get("secret")
        return secret


class EndpointWriteSerializer(StrictFieldsMixin, serializers.Serializer):
    # Only the shape is checked here; the URL guard and event names are the service's job.
    url = serializers.CharField(max_length=2048, trim_whitespace=True)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text=f"Empty means all. Known: {', '.join(SUBSCRIBABLE_EVENT_TYPES)}.",
    )
    events = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text="Another name for `event_types` (give one of the two).",
    )
    is_enabled = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "events" in attrs:
            if "event_types" in attrs:
                raise serializers.ValidationError(
                    {"events": "Give event_types or events, not both."}
                )
            attrs["event_types"] = attrs.pop("events")
        return attrs


class EndpointUpdateSerializer(EndpointWriteSerializer):
    url = serializers.CharField(max_length=2048, trim_whitespace=True, required=False)


class DeliverySerializer(serializers.ModelSerializer):
    message_id = serializers.CharField(source="event.msg_id", read_only=True)
    event_type = serializers.CharField(source="event.event_type", read_only=True)
    task = serializers.CharField(source="event.task_id", allow_null=True, read_only=True)
    endpoint = serializers.IntegerField(source="endpoint_id", allow_null=True, read_only=True)
    error = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields: tuple[str, ...] = (
            "id",
            "message_id",
            "event_type",
            "endpoint",
            "task",
            "url",
            "attempt",
            "trigger",
            "state",
            "next_attempt_at",
            "attempted_at",
            "status_code",
            "latency_ms",
            "response_body",
            "error",
            "created_at",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_error(self, delivery: WebhookDelivery) -> str | None:
        return delivery.error or None


class DeliveryDetailSerializer(DeliverySerializer):
    payload = serializers.SerializerMethodField()

    class Meta(DeliverySerializer.Meta):
        fields = (*DeliverySerializer.Meta.fields, "payload")
        read_only_fields = fields

    def get_payload(self, delivery: WebhookDelivery) -> Any:
        return json.loads(delivery.event.body)


class DeliveryQuerySerializer(serializers.Serializer):
    endpoint = serializers.IntegerField(required=False, min_value=1)
    task = serializers.RegexField(r"^[0-9A-Za-z_-]{1,32}$", required=False)
    state = serializers.ChoiceField(choices=DeliveryState.choices, required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100)


SECRET_STATUS = inline_serializer(
    "WebhookSecretStatus",
    {
        "exists": serializers.BooleanField(),
        "created_at": serializers.DateTimeField(allow_null=True),
        "previous_expires_at": serializers.DateTimeField(allow_null=True),
    },
)
SECRET_ROTATED = inline_serializer(
    "WebhookSecretRotated",
    {
        "secret": serializers.CharField(help_text="Shown once. Verify with standardwebhooks."),
        "created_at": serializers.DateTimeField(),
        "previous_expires_at": serializers.DateTimeField(allow_null=True),
    },
)


# --- Views -----------------------------------------------------------------------------------------


class WebhookEndpointListView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Webhook endpoints of the organization",
        operation_id="v1_webhook_endpoints_list",
        responses={200: EndpointSerializer(many=True), **_errors(401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        endpoints = endpoint_list(organization=self.organization)
        return Response(EndpointSerializer(endpoints, many=True).data)

    @extend_schema(
        summary="Create a webhook endpoint",
        description=(
            "The URL must be http(s) and reach a public address. Messages are signed per the "
            "Standard Webhooks spec with the organization's secret, which this call returns "
            "(once) when it is the organization's first."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=EndpointWriteSerializer,
        responses={201: EndpointCreatedSerializer, **_errors(400, 401, 403, 409, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        body = EndpointWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        created = endpoint_create(
            organization=self.organization,
            url=data["url"],
            description=data.get("description", ""),
            event_types=data.get("event_types"),
            is_enabled=data.get("is_enabled", True),
        )
        serializer = EndpointCreatedSerializer(created.endpoint, context={"secret": created.secret})
        return Response(serializer.data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Get a webhook endpoint",
        responses={200: EndpointSerializer, **_errors(401, 403, 404, 429)},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoint_get(organization=self.organization, endpoint_id=endpoint_id)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        summary="Change a webhook endpoint",
        description="Setting `is_enabled` to true re-enables a disabled endpoint.",
        request=EndpointUpdateSerializer,
        responses={200: EndpointSerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoint_get(organization=self.organization, endpoint_id=endpoint_id)
        body = EndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        updated = endpoint_update(
            organization=self.organization,
            endpoint_id=endpoint.pk,
            url=data.get("url"),
            description=data.get("description"),
            event_types=data.get("event_types"),
            is_enabled=data.get("is_enabled"),
        )
        return Response(EndpointSerializer(updated).data)

    @extend_schema(
        summary="Delete a webhook endpoint and its delivery log",
        responses={204: None, **_errors(401, 403, 404, 429)},
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint_delete(organization=self.organization, endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointTestView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Send a test event to an endpoint",
        description="One `webhook.test` message, sent even to a disabled endpoint, not retried.",
        parameters=[IDEMPOTENCY_HEADER],
        request=None,
        responses={202: DeliverySerializer, **_errors(400, 401, 403, 404, 409, 422, 429)},
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        attempt = endpoint_send_test_event(organization=self.organization, endpoint_id=endpoint_id)
        return Response(DeliverySerializer(attempt).data, status=status.HTTP_202_ACCEPTED)


class WebhookSecretView(OrganizationAPIView):
    @extend_schema(
        summary="About the signing secret (never the secret itself)",
        responses={200: SECRET_STATUS, **_errors(401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        return Response(webhook_secret_status(organization=self.organization, now=clock.now()))


class WebhookSecretRotateView(OrganizationAPIView):
    writes = True
    takes_no_body = True

    @extend_schema(
        summary="Rotate the signing secret (the new secret is shown once)",
        description=(
            "The previous secret keeps signing until `previous_expires_at`: meanwhile every "
            "message carries both signatures, so receivers can switch without losing any."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=None,
        responses={201: SECRET_ROTATED, **_errors(400, 401, 403, 409, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        secret = webhook_secret_rotate(organization=self.organization)
        state = webhook_secret_status(organization=self.organization, now=clock.now())
        return Response(
            {
                "secret": secret,
                "created_at": state["created_at"],
                "previous_expires_at": state["previous_expires_at"],
            },
            status=status.HTTP_201_CREATED,
        )


class WebhookDeliveryListView(OrganizationAPIView):
    query_params = tuple(DeliveryQuerySerializer().fields)

    @extend_schema(
        summary="Delivery attempts, newest first",
        operation_id="v1_webhook_deliveries_list",
        parameters=[DeliveryQuerySerializer],
        responses={
            200: inline_serializer(
                "WebhookDeliveryPage",
                {
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": DeliverySerializer(many=True),
                },
            ),
            **_errors(400, 401, 403, 429),
        },
    )
    def get(self, request: Request) -> Response:
        query = DeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        deliveries = delivery_list(
            organization=self.organization,
            endpoint_id=params.get("endpoint"),
            task_id=params.get("task"),
            state=params.get("state"),
        )
        paginator = IdCursorPagination(page_size=25, max_page_size=100)
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)


class WebhookDeliveryDetailView(OrganizationAPIView):
    @extend_schema(
        summary="One delivery attempt, with the message payload",
        responses={200: DeliveryDetailSerializer, **_errors(401, 403, 404, 429)},
    )
    def get(self, request: Request, delivery_id: str) -> Response:
        delivery = delivery_get(organization=self.organization, delivery_id=delivery_id)
        return Response(DeliveryDetailSerializer(delivery).data)


class WebhookDeliveryResendView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Resend the message of a delivery (same webhook-id)",
        description=(
            "Brings a scheduled retry forward, or adds one manual attempt when the message has "
            "succeeded or died."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=None,
        responses={202: DeliverySerializer, **_errors(400, 401, 403, 404, 409, 422, 429)},
    )
    def post(self, request: Request, delivery_id: str) -> Response:
        attempt = delivery_resend(organization=self.organization, delivery_id=delivery_id)
        return Response(DeliverySerializer(attempt).data, status=status.HTTP_202_ACCEPTED)
