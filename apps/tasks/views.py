"""Public result files (SPEC §4.4): no auth, the unguessable path is the access."""

from __future__ import annotations

import mimetypes

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

SERVED_PREFIXES = ("results/", "inputs/")


@require_GET
def result_file(request: HttpRequest, path: str) -> FileResponse:
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
