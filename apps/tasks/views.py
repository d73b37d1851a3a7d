"""Tasks-side routes that are not a public API dialect: result files and upstream callbacks."""

from __future__ import annotations

import json
import mimetypes

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import PermissionDenied

from .lifecycle import upstream_callback_receive

SERVED_PREFIXES = ("results/", "inputs/")


@require_GET
def result_file(request: HttpRequest, path: str) -> FileResponse:
    """Public result files (SPEC §4.4): no auth, the unguessable path is the access."""
    if not path.startswith(SERVED_PREFIXES) or ".." in path.split("/"):
        raise Http404("No such file.")
    try:
        handle = default_storage.open(path, "rb")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise Http404("No such file.") from exc
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    # Results never change once written: let clients and CDNs keep them.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@csrf_exempt  # called by an upstream server, authenticated by the token in the URL
@require_POST
def engine_callback(request: HttpRequest, engine: str, account_id: int, token: str) -> JsonResponse:
    """An upstream's callback (one route for every engine): parse the body, one service call."""
    try:
        payload = json.loads(request.body or b"null")
    except ValueError:
        payload = None
    try:
        if not isinstance(payload, dict):
            # Authenticate first all the same: a stranger learns nothing about the URL.
            upstream_callback_receive(
                engine_name=engine, account_id=account_id, token=token, payload={}
            )
            return JsonResponse({"error": "The body must be a task JSON object."}, status=400)
        outcome = upstream_callback_receive(
            engine_name=engine, account_id=account_id, token=token, payload=payload
        )
    except PermissionDenied as exc:
        return JsonResponse({"error": exc.message}, status=403)
    return JsonResponse({"result": outcome})
