"""Tasks-side routes that are not a public API dialect: result files and upstream callbacks."""

from __future__ import annotations

import hashlib
import json
import mimetypes

from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    JsonResponse,
)
from django.http.response import HttpResponseBase
from django.utils.http import parse_etags, quote_etag
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.errors import PermissionDenied

from .lifecycle import upstream_callback_receive

SERVED_PREFIXES = ("results/", "inputs/")


@require_http_methods(["GET", "HEAD"])
def result_file(request: HttpRequest, path: str) -> HttpResponseBase:
    """Public result files (SPEC §4.4): no auth, the unguessable path is the access.

    Web clients load them with ``crossOrigin=anonymous`` to cache them, so every answer allows
    any origin; ``HEAD`` is answered without reading the file; the ETag (the file never changes
    once written) answers ``If-None-Match`` with 304; the download name is the stored file's
    (``<task id>.png``, ``<task id>-1.png`` for the splits of a grid).
    """
    if not path.startswith(SERVED_PREFIXES) or ".." in path.split("/"):
        raise Http404("No such file.")
    try:
        handle = default_storage.open(path, "rb")
        size = default_storage.size(path)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise Http404("No such file.") from exc
    etag = quote_etag(hashlib.sha256(f"{path}\0{size}".encode()).hexdigest()[:32])
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    wanted = request.headers.get("If-None-Match", "")
    response: HttpResponseBase
    if wanted.strip() == "*" or etag in parse_etags(wanted):
        handle.close()
        response = HttpResponseNotModified()
    elif request.method == "HEAD":
        handle.close()
        response = HttpResponse(content_type=content_type)
        response["Content-Length"] = str(size)
    else:
        response = FileResponse(handle, content_type=content_type)
    download_name = path.rsplit("/", 1)[-1]
    response["Content-Disposition"] = f'inline; filename="{download_name}"'
    response["ETag"] = etag
    # Results never change once written: let clients and CDNs keep them.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "ETag, Content-Disposition, Content-Length"
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
