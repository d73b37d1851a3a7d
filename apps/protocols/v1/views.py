"""Native v1 API (SPEC §6.3): tasks, API keys and the balance.

Errors are ``{"error": {"code", "message", "details"}}`` (``apps.core.api``). Every POST honours
``Idempotency-Key`` and every request counts against the key's rate limit (``apps.core``).

Key management: any key of the organization may list and read its keys; creating, changing
and revoking needs a key that is not read-only, and can never grant more than the calling key
holds (see ``apps.api_keys.services.api_key_create_by_key``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api_keys.selectors import api_key_get, api_key_list
from apps.api_keys.services import (
    KEEP,
    api_key_create_by_key,
    api_key_revoke_by_key,
    api_key_update_by_key,
)
from apps.billing.selectors import balance_get
from apps.core.api import OrganizationAPIView
from apps.core.schema import IDEMPOTENCY_HEADER
from apps.tasks.actions import ByName
from apps.tasks.enums import Action
from apps.tasks.models import Protocol
from apps.tasks.selectors import TaskFilters, task_fetch, task_get
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import ClientEcho
from apps.tasks.services.press import ModalInput, task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.services.video import task_submit_video

from ..common import caller_of
from ..task_fields import queue_estimates_prefetch
from ..ttapi.actions import ttapi_names
from .errors import NativeErrorsMixin
from .pagination import NewestFirstPagination
from .payloads import with_queue
from .serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    ApiKeyUpdateSerializer,
    TaskCreateSerializer,
    TaskListQuerySerializer,
    TaskModalSerializer,
    TaskPageSerializer,
    TaskSerializer,
)

ERROR = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorBody",
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


class BalanceView(OrganizationAPIView):
    required_key_flags = ("billing_read",)

    @extend_schema(
        summary="Token balance",
        responses={
            200: inline_serializer(
                "Balance",
                {"available": serializers.IntegerField(), "held": serializers.IntegerField()},
            ),
            **_errors(401, 403, 429),
        },
    )
    def get(self, request: Request) -> Response:
        balance = balance_get(organization=self.organization)
        return Response({"available": balance.available, "held": balance.held})


# --- tasks -----------------------------------------------------------------------------------


def _created(outcome: SubmitOutcome) -> Response:
    body = TaskSerializer(outcome.task).data
    if outcome.result != SubmitOutcome.MODAL:
        body["properties"]["queue_position"] = outcome.queue_position
        body["properties"]["expected_start"] = (
            outcome.expected_start.isoformat() if outcome.expected_start else None
        )
    return Response(body, status=status.HTTP_201_CREATED)


def _plain_list_query(request: Request) -> dict[str, Any] | None:
    """The list's commonest queries (none, or just ``limit=<1..100 in digits>``) as
    ``TaskListQuerySerializer`` validates them, without building the serializer (most of a
    page's Python time); None for anything else, which the serializer checks."""
    query = request.query_params
    unfiltered: dict[str, Any] = {"status": [], "action": [], "mode": [], "is_test": None}
    if not query:
        return unfiltered
    if len(query) == 1 and "limit" in query:
        values = query.getlist("limit")
        if len(values) == 1 and values[0].isascii() and values[0].isdigit():
            limit = int(values[0])
            if 1 <= limit <= 100:
                return {**unfiltered, "limit": limit}
    return None


class TaskListView(NativeErrorsMixin, OrganizationAPIView):
    required_key_flags = ("midjourney",)
    writes = True
    query_params = tuple(TaskListQuerySerializer().fields)

    @extend_schema(
        summary="List tasks, newest first",
        operation_id="v1_tasks_list",
        parameters=[TaskListQuerySerializer],
        responses={200: TaskPageSerializer, **_errors(400, 401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        params = _plain_list_query(request)
        if params is None:
            query = TaskListQuerySerializer(data=request.query_params)
            query.is_valid(raise_exception=True)
            params = query.validated_data
        filters = TaskFilters(
            statuses=tuple(sorted(params.get("status") or [])),
            actions=tuple(sorted(params.get("action") or [])),
            modes=tuple(sorted(params.get("mode") or [])),
            is_test=params.get("is_test"),
            search=params.get("search"),
        )
        paginator = NewestFirstPagination(limit=params.get("limit"))
        page = paginator.paginate_tasks(
            organization=self.organization, filters=filters, request=request
        )
        rows = TaskSerializer(page, many=True).data
        queue_estimates_prefetch(page)
        return paginator.get_paginated_response(
            [with_queue(row, task) for row, task in zip(rows, page, strict=True)]
        )

    @extend_schema(
        summary="Create a task, or press a button of a finished task",
        description=(
            "A new task gives `action` (IMAGINE, DESCRIBE, BLEND, SHORTEN, SWAP_FACE, EDIT, "
            "RETEXTURE) with `prompt` and/or `images` (EDIT: one image and its `mask`). A follow-up gives `parent` and `button` (U1…U4, V1…V4, "
            "REROLL, VARY_SUBTLE, VARY_STRONG, VARY_REGION, ZOOM_2X, ZOOM_1_5X, CUSTOM_ZOOM, "
            "PAN_LEFT … or a raw customId). Two-step buttons (VARY_REGION, CUSTOM_ZOOM, the "
            "describe/shorten prompts) create a task in status MODAL: finish it with "
            "`POST /tasks/{id}/modal`. Remix: a `prompt` on a variation, reroll or pan remixes "
            "it with that prompt; `remix: true` (or the key's remix default) without one makes "
            "it wait in MODAL for the prompt."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=TaskCreateSerializer,
        responses={201: TaskSerializer, **_errors(400, 401, 402, 403, 404, 409, 413, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        body = TaskCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        caller = caller_of(self, Protocol.NATIVE)
        if data.get("pool") is not None:
            # The body's pool wins over the header's.
            caller = dataclasses.replace(caller, pool=data["pool"])
        echo = ClientEcho(notify_hook=data.get("webhook_url", ""), metadata=data.get("metadata"))
        if data.get("action") == Action.VIDEO:
            outcome = task_submit_video(
                caller=caller,
                prompt=data.get("prompt", ""),
                images=data.get("images", []),
                parent_id=data.get("parent"),
                index=data.get("index"),
                extend=data.get("extend", False),
                motion=data.get("motion"),
                batch_size=data.get("batch_size"),
                loop=data.get("loop", False),
                resolution=data.get("resolution"),
                end_image=data.get("end_image"),
                mode=data.get("mode"),
                echo=echo,
            )
        elif "parent" in data:
            # TTAPI's button names are accepted too: the native API always took them.
            outcome = task_press(
                caller=caller,
                parent_id=data["parent"],
                button=ByName(data["button"], extra_names=ttapi_names),
                mode=data.get("mode"),
                echo=echo,
                # A prompt on a variation, reroll or pan remixes it.
                modal=ModalInput(prompt=data.get("prompt"), mask=data.get("mask"))
                if "prompt" in data or "mask" in data
                else None,
                remix=data.get("remix"),
            )
        else:
            outcome = task_submit(
                caller=caller,
                action=data["action"],
                prompt=data.get("prompt", ""),
                images=data.get("images", []),
                mode=data.get("mode"),
                dimensions=data.get("dimensions"),
                echo=echo,
                remix=bool(data.get("remix")),
                mask=data.get("mask"),
            )
        return _created(outcome)


class TaskDetailView(NativeErrorsMixin, OrganizationAPIView):
    required_key_flags = ("midjourney",)

    @extend_schema(
        summary="Get a task", responses={200: TaskSerializer, **_errors(401, 403, 404, 429)}
    )
    def get(self, request: Request, task_id: str) -> Response:
        task = task_fetch(organization=self.organization, task_id=task_id)
        return Response(with_queue(TaskSerializer(task).data, task))


class TaskModalView(NativeErrorsMixin, OrganizationAPIView):
    required_key_flags = ("midjourney",)
    writes = True

    @extend_schema(
        summary="Second step of a MODAL task: the mask (vary region) or the prompt",
        parameters=[IDEMPOTENCY_HEADER],
        request=TaskModalSerializer,
        responses={200: TaskSerializer, **_errors(400, 401, 402, 403, 404, 409, 413, 422, 429)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        # Another organization's task answers like a missing one, whatever the body says.
        task_get(organization=self.organization, task_id=task_id)
        body = TaskModalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = task_submit_modal(
            caller=caller_of(self, Protocol.NATIVE),
            task_id=task_id,
            prompt=body.validated_data.get("prompt"),
            mask=body.validated_data.get("mask"),
        )
        return Response(TaskSerializer(outcome.task).data)


class TaskCancelView(NativeErrorsMixin, OrganizationAPIView):
    required_key_flags = ("midjourney",)
    writes = True
    takes_no_body = True

    @extend_schema(
        summary="Cancel an unfinished task (its hold is released)",
        parameters=[IDEMPOTENCY_HEADER],
        request=None,
        responses={200: TaskSerializer, **_errors(400, 401, 403, 404, 409, 422, 429)},
    )
    def post(self, request: Request, task_id: str) -> Response:
        task = task_cancel(organization=self.organization, task_id=task_id, api_key=self.api_key)
        return Response(TaskSerializer(task).data)


# --- API keys --------------------------------------------------------------------------------


class KeyListView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="API keys of the organization",
        responses={200: ApiKeySerializer(many=True), **_errors(401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        keys = api_key_list(organization=self.organization)
        return Response(ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        summary="Create an API key (the secret is shown once)",
        description="A key cannot grant more than the key that creates it holds.",
        parameters=[IDEMPOTENCY_HEADER],
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer, **_errors(400, 401, 403, 409, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        issued = api_key_create_by_key(
            caller=self.api_key,
            name=data["name"],
            is_test=data["is_test"],
            can_midjourney=data["midjourney"],
            read_only=data["read_only"],
            can_read_billing=data["billing_read"],
            allowed_ips=data.get("allowed_ips"),
            expires_at=data.get("expires_at"),
            remix=data["remix"],
            pool=data["pool"],
        )
        serializer = ApiKeyCreatedSerializer(issued.api_key, context={"secret": issued.plaintext})
        return Response(serializer.data, status=status.HTTP_201_CREATED)


class KeyDetailView(OrganizationAPIView):
    writes = True

    @extend_schema(
        summary="Get an API key", responses={200: ApiKeySerializer, **_errors(401, 403, 404, 429)}
    )
    def get(self, request: Request, key_id: str) -> Response:
        return Response(
            ApiKeySerializer(api_key_get(organization=self.organization, key_id=key_id)).data
        )

    @extend_schema(
        summary="Change an API key's name, permissions, allow-list or expiry",
        description=(
            "Fields left out stay as they are. `allowed_ips: null` (or `[]`) removes the "
            "allow-list and `expires_at: null` the expiry — unless the calling key is itself "
            "restricted that way."
        ),
        request=ApiKeyUpdateSerializer,
        responses={200: ApiKeySerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def patch(self, request: Request, key_id: str) -> Response:
        api_key = api_key_get(organization=self.organization, key_id=key_id)
        body = ApiKeyUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        updated = api_key_update_by_key(
            caller=self.api_key,
            api_key=api_key,
            name=data.get("name"),
            can_midjourney=data.get("midjourney"),
            read_only=data.get("read_only"),
            can_read_billing=data.get("billing_read"),
            allowed_ips=data.get("allowed_ips", KEEP),
            expires_at=data.get("expires_at", KEEP),
            remix=data.get("remix"),
            pool=data.get("pool"),
        )
        return Response(ApiKeySerializer(updated).data)

    @extend_schema(
        summary="Revoke an API key (takes effect immediately)",
        responses={200: ApiKeySerializer, **_errors(401, 403, 404, 429)},
    )
    def delete(self, request: Request, key_id: str) -> Response:
        api_key = api_key_get(organization=self.organization, key_id=key_id)
        revoked = api_key_revoke_by_key(caller=self.api_key, api_key=api_key)
        return Response(ApiKeySerializer(revoked).data)
