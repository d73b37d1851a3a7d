"""Stripe's webhook endpoint. Thin: verify and hand the event to the service."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.errors import ServiceError

from .stripe_service import stripe_event_receive


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request.
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        result = stripe_event_receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except ServiceError as exc:
        return JsonResponse({"error": exc.as_dict()}, status=exc.http_status)
    if result.failed:
        # 500 makes Stripe retry; the event is stored unprocessed with the error.
        return JsonResponse(
            {"error": {"code": "processing_failed", "message": "The event will be retried."}},
            status=500,
        )
    return JsonResponse({"received": True, "duplicate": result.duplicate})
