"""The upstream's callback endpoint: authenticate the URL, parse, call one service."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.errors import PermissionDenied

from .services import mjproxy_callback_account, mjproxy_callback_apply


@csrf_exempt  # called by an upstream server, authenticated by the token in the URL
@require_POST
def callback(request: HttpRequest, account_id: int, token: str) -> JsonResponse:
    try:
        account = mjproxy_callback_account(account_id=account_id, token=token)
    except PermissionDenied as exc:
        return JsonResponse({"error": exc.message}, status=403)
    try:
        payload = json.loads(request.body or b"null")
    except ValueError:
        return JsonResponse({"error": "The body must be a task JSON object."}, status=400)
    if not isinstance(payload, dict):
        return JsonResponse({"error": "The body must be a task JSON object."}, status=400)
    return JsonResponse({"result": mjproxy_callback_apply(account=account, payload=payload)})
