"""Tasks-side routes that are not a public API dialect: result files and upstream callbacks."""

from __future__ import annotations

import hashlib
import mimetypes
import re

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
from rest_framework.exceptions import APIException

from apps.core.errors import PermissionDenied
from apps.core.jsonbody import json_body_parse

from .lifecycle import result_file_derive, upstream_callback_receive

SERVED_PREFIXES = ("results/", "inputs/")
#: Most bytes one Range answer carries; a player asks again for the rest (RFC 9110 allows a
#: shorter part than asked), so a request never reads a whole large clip into memory.
MAX_RANGE_BYTES = 8 * 1024 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """A single ``bytes=`` range as (first, last); None without one (or one we ignore, such
    as several ranges: the whole file is then a valid answer); False when unsatisfiable."""
    match = _RANGE_RE.match(header.strip())
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
    else:  # the last N bytes
        first, last = max(0, size - int(match[2])), size - 1
    if first >= size or last < first:
        return False
    return first, min(last, size - 1, first + MAX_RANGE_BYTES - 1)


@require_http_methods(["GET", "HEAD"])
def result_file(request: HttpRequest, path: str) -> HttpResponseBase:
    """Public result files (SPEC §4.4): no auth, the unguessable path is the access.

    Web clients load them with ``crossOrigin=anonymous`` to cache them, so every answer allows
    any origin; ``HEAD`` is answered without reading the file; the ETag (the file never changes
    once written) answers ``If-None-Match`` with 304; the download name is the stored file's
    (``<task id>.png``, ``<task id>-1.png`` for the splits of a grid). A result's thumbnail or
    split that the results queue has not made yet is made on this first request.
    """
    if not path.startswith(SERVED_PREFIXES) or ".." in path.split("/"):
        raise Http404("No such file.")
    if not default_storage.exists(path):
        # A result's thumbnail or split not made yet: made now (issue 15), then served.
        result_file_derive(path)
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
    elif (span := _byte_range(request.headers.get("Range", ""), size)) is not None:
        # Video players (Safari's always) seek with Range requests.
        if span is False or span is True:
            handle.close()
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
        else:
            first, last = span
            with handle:
                handle.seek(first)
                part = handle.read(last - first + 1)
            response = HttpResponse(part, status=206, content_type=content_type)
            response["Content-Range"] = f"bytes {first}-{last}/{size}"
            response["Content-Length"] = str(len(part))
    else:
        response = FileResponse(handle, content_type=content_type)
    download_name = path.rsplit("/", 1)[-1]
    response["Content-Disposition"] = f'inline; filename="{download_name}"'
    response["ETag"] = etag
    # Results never change once written: let clients and CDNs keep them.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    response["Accept-Ranges"] = "bytes"
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = (
        "ETag, Content-Disposition, Content-Length, Content-Range, Accept-Ranges"
    )
    return response


@csrf_exempt  # called by an upstream server, authenticated by the token in the URL
@require_POST
def engine_callback(request: HttpRequest, engine: str, account_id: int, token: str) -> JsonResponse:
    """An upstream's callback (one route for every engine): parse the body, one service call."""
    try:
        # The API's parser, with its limits: a body nested past them (which json.loads would
        # meet as a RecursionError) or carrying text PostgreSQL cannot store is no task JSON.
        payload = json_body_parse(request.body or b"null")
    except APIException:
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
