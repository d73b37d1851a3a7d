"""The midjourney-proxy and TTAPI surfaces in the OpenAPI document behind ``/api/docs/``.

Their views opt out of drf-spectacular's introspection (``schema = None``: their bodies are
parsed by hand, in each dialect's own loose style), so this post-processing hook adds them from
the tables below, which follow docs/api.md. ``/api/schema/`` stays the native API alone (the
contract the schema fuzzing checks answers against); ``/api/schema/all/`` adds these and is
what the interactive docs show. ``tests/protocols/test_openapi_dialects.py`` checks that every
documented path is a mounted route and every mounted route is documented. A POST declares
``Idempotency-Key`` when the view mounted there records it (not the reads sent as POST), as
the native views' ``extend_schema`` do.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import Resolver404, resolve

from apps.core.idempotency import IdempotentPostMixin
from apps.core.schema import idempotency_header_object

MJPROXY_TAG = "midjourney-proxy"
TTAPI_TAG = "TTAPI"

_STR = {"type": "string"}
_STRS = {"type": "array", "items": {"type": "string"}}
_INT = {"type": "integer"}

#: (method, path, summary, body properties, required, response description)
MJPROXY: list[tuple[str, str, str, dict[str, Any], list[str], str]] = [
    (
        "post",
        "/mj/submit/imagine",
        "Imagine: a prompt, optionally with reference images",
        {
            "prompt": _STR,
            "base64Array": {**_STRS, "description": "data-URL or plain base64 images"},
            "notifyHook": {**_STR, "description": "per-task callback URL"},
            "state": _STR,
            "botType": {**_STR, "enum": ["MID_JOURNEY", "NIJI_JOURNEY"]},
            "mode": {**_STR, "enum": ["FAST", "RELAX", "TURBO"]},
            "enableRemix": {
                "type": "boolean",
                "description": "remix mode for this task's variations, rerolls and pans",
            },
        },
        ["prompt"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/action",
        "Press a button of a result (U1, V2, zoom, pan …)",
        {
            "taskId": _STR,
            "customId": _STR,
            "notifyHook": _STR,
            "state": _STR,
            "enableRemix": {
                "type": "boolean",
                "description": "a variation, reroll or pan answers 21 and takes the changed "
                "prompt in submit/modal; left out, the key's remix default decides",
            },
        },
        ["taskId", "customId"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/modal",
        "The second step of a button that asks for input (Vary (Region), Custom Zoom, remix)",
        {"taskId": _STR, "prompt": _STR, "maskBase64": _STR},
        ["taskId"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/describe",
        "Describe: four prompts that could have made an image",
        {"base64": _STR, "link": {**_STR, "format": "uri"}},
        [],
        "submit",
    ),
    (
        "post",
        "/mj/submit/blend",
        "Blend 2–5 images",
        {
            "base64Array": {**_STRS, "minItems": 2, "maxItems": 5},
            "dimensions": {**_STR, "enum": ["PORTRAIT", "SQUARE", "LANDSCAPE"]},
        },
        ["base64Array"],
        "submit",
    ),
    ("post", "/mj/submit/shorten", "Shorten a prompt", {"prompt": _STR}, ["prompt"], "submit"),
    (
        "post",
        "/mj/submit/video",
        "Video (Plus route): animate a start frame or a task's image, or extend a clip",
        {
            "prompt": _STR,
            "motion": {**_STR, "enum": ["low", "high"]},
            "image": {**_STR, "format": "uri"},
            "base64": _STR,
            "batchSize": {**_INT, "enum": [1, 2, 4]},
            "loop": {"type": "boolean"},
            "videoType": {**_STR, "enum": ["vid_1.1_i2v_480", "vid_1.1_i2v_720"]},
            "endImage": _STR,
            "action": {**_STR, "enum": ["extend"]},
            "taskId": _STR,
            "index": {**_INT, "minimum": 0, "maximum": 3},
            "notifyHook": {**_STR, "format": "uri"},
            "state": _STR,
        },
        [],
        "submit",
    ),
    (
        "post",
        "/mj/insight-face/swap",
        "Face swap: the face of the source image onto the target image",
        {"sourceBase64": _STR, "targetBase64": _STR},
        ["sourceBase64", "targetBase64"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/change",
        "Upscale, vary or reroll a grid by index",
        {
            "taskId": _STR,
            "action": {**_STR, "enum": ["UPSCALE", "VARIATION", "REROLL"]},
            "index": {**_INT, "minimum": 1, "maximum": 4},
        },
        ["taskId", "action"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/simple-change",
        'Upscale, vary or reroll from one string ("<taskId> U1")',
        {"content": _STR},
        ["content"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/edits",
        "The editor: repaint the masked area (or a transparent, enlarged canvas) of an image",
        {
            "prompt": _STR,
            "base64Array": {**_STRS, "minItems": 1, "maxItems": 1},
            "image": {**_STR, "description": "instead of base64Array"},
            "maskBase64": {**_STR, "description": "white: the area to repaint"},
            "notifyHook": _STR,
            "state": _STR,
        },
        ["prompt", "maskBase64"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/retexture",
        "Retexture: keep the image's shapes, restyle its surfaces with the prompt",
        {
            "prompt": _STR,
            "base64Array": {**_STRS, "minItems": 1, "maxItems": 1},
            "image": {**_STR, "description": "instead of base64Array"},
            "notifyHook": _STR,
            "state": _STR,
        },
        ["prompt"],
        "submit",
    ),
    (
        "post",
        "/mj/submit/upload-discord-images",
        "Store images for prompts (image prompts, --sref, --cref, --oref); result: their URLs",
        {"base64Array": {**_STRS, "minItems": 1, "maxItems": 10}},
        ["base64Array"],
        "submit",
    ),
    ("get", "/mj/task/{id}/fetch", "A task (404, empty body, if unknown)", {}, [], "task"),
    (
        "post",
        "/mj/task/list-by-condition",
        "Tasks by id (at most 1000; unknown ids are left out)",
        {"ids": _STRS},
        ["ids"],
        "tasks",
    ),
    ("get", "/mj/task/list", "The newest 100 tasks", {}, [], "tasks"),
    ("get", "/mj/task/queue", "Unfinished tasks, oldest first", {}, [], "tasks"),
    ("get", "/mj/task/{id}/image-seed", "The seed of a finished task", {}, [], "seed"),
    (
        "post",
        "/mj/task/{id}/cancel",
        "Cancel an unfinished task (its hold is released)",
        {},
        [],
        "submit",
    ),
]

TTAPI: list[tuple[str, str, str, dict[str, Any], list[str], str]] = [
    (
        "post",
        "/midjourney/v1/imagine",
        "Imagine",
        {
            "prompt": _STR,
            "mode": {**_STR, "enum": ["fast", "relax", "turbo"]},
            "hookUrl": {**_STR, "format": "uri"},
            "timeout": _INT,
            "getUImages": {"type": "boolean"},
        },
        ["prompt"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/action",
        "Press a button: upsample1..4, variation1..4, reroll, zoom_out_2x, pan_left …; a "
        "prompt on a variation, reroll or pan remixes it",
        {"jobId": _STR, "action": _STR, "prompt": _STR, "mask": _STR, "hookUrl": _STR},
        ["jobId", "action"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/inpaint",
        "Vary (Region) in one call",
        {"jobId": _STR, "mask": _STR, "prompt": _STR},
        ["jobId", "mask"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/blend",
        "Blend 2–5 images",
        {
            "imgBase64Array": {**_STRS, "minItems": 2, "maxItems": 5},
            "dimensions": {**_STR, "enum": ["PORTRAIT", "SQUARE", "LANDSCAPE"]},
        },
        ["imgBase64Array"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/describe",
        "Describe an image",
        {"base64": _STR, "url": {**_STR, "format": "uri"}},
        [],
        "job",
    ),
    ("post", "/midjourney/v1/seed", "The seed of a job", {"jobId": _STR}, ["jobId"], "seed"),
    (
        "post",
        "/midjourney/v1/video/submit",
        "Video from a start frame (also at /midjourney/video/submit, TTAPI's documented path)",
        {
            "prompt": _STR,
            "imageUrl": {**_STR, "format": "uri"},
            "manual": {**_STR, "enum": ["low", "high"]},
            "bs": {**_INT, "enum": [1, 2, 4]},
            "resolution": {**_STR, "enum": ["sd", "hd", "480p", "720p"]},
            "endingUrl": {**_STR, "format": "uri"},
            "loop": {"type": "boolean"},
            "mode": {**_STR, "enum": ["fast", "relax", "turbo"]},
            "hookUrl": {**_STR, "format": "uri"},
        },
        ["imageUrl"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/video/extend",
        "Extend video index (0-3) of a job by 4 s (also at /midjourney/video/extend)",
        {
            "jobId": _STR,
            "index": {**_INT, "minimum": 0, "maximum": 3},
            "manual": {**_STR, "enum": ["low", "high"]},
            "animateMode": {**_STR, "enum": ["auto", "manual"]},
            "prompt": _STR,
            "bs": {**_INT, "enum": [1, 2, 4]},
            "hookUrl": {**_STR, "format": "uri"},
        },
        ["jobId", "index"],
        "job",
    ),
    (
        "post",
        "/midjourney/v1/fetch",
        "A job's status and result",
        {"jobId": _STR},
        ["jobId"],
        "fetch",
    ),
]

_RESPONSES = {
    "submit": "`{code, description, result, properties}`: code 1 started, 22 queued, 21 waits "
    "for submit/modal, 3 not found, 4 refused, 23 plan limit, 24 banned word.",
    "task": "Task JSON: id, action, status, prompt, progress, imageUrl, imageUrls, videoUrl, videoUrls, "
    "buttons …",
    "tasks": "A list of Task JSON.",
    "seed": "The seed of the finished task.",
    "job": '`{status: "SUCCESS", message, data: {jobId, job_id}}`; errors are '
    '`{status: "FAILED", message, data: null}`.',
    "fetch": "`{status, message, jobId, data}`: status PENDING_QUEUE, ON_QUEUE, SUCCESS or FAILED.",
}


def _operation(
    tag: str, method: str, summary: str, body: dict[str, Any], required: list[str], answer: str
) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = (
        [{"mjApiSecret": []}, {"bearerKey": []}, {"ttApiKey": []}]
        if tag == MJPROXY_TAG
        else [{"ttApiKey": []}, {"bearerKey": []}, {"mjApiSecret": []}]
    )
    operation: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "security": security,
        "responses": {
            "200": {
                "description": _RESPONSES[answer],
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
    if method == "post" and body:
        schema: dict[str, Any] = {"type": "object", "properties": body}
        if required:
            schema["required"] = required
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    return operation


def _operation_id(tag: str, method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.replace("-", "_").split("/") if w]
    return "_".join([tag.lower().replace("-", ""), method, *words])


def _path_parameters(path: str) -> list[dict[str, Any]]:
    if "{id}" not in path:
        return []
    return [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _records_idempotency_key(method: str, path: str) -> bool:
    """Whether the view mounted at ``path`` records a ``method`` request that carries an
    ``Idempotency-Key`` (``IdempotentPostMixin``): asked of the view itself, so a read sent as
    POST (``idempotent_methods = ()``) is documented as ignoring it, as it does."""
    try:
        match = resolve(path.replace("{id}", "0"))
    except Resolver404:
        return False  # not mounted (tests/protocols/test_openapi_dialects.py says so)
    view_class = getattr(match.func, "view_class", None)
    return (
        isinstance(view_class, type)
        and issubclass(view_class, IdempotentPostMixin)
        and method.upper() in view_class.idempotent_methods
    )


def add_dialects(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular post-processing hook: add the two compatibility dialects."""
    paths = result.setdefault("paths", {})
    for tag, table in ((MJPROXY_TAG, MJPROXY), (TTAPI_TAG, TTAPI)):
        for method, path, summary, body, required, answer in table:
            operation = {
                "operationId": _operation_id(tag, method, path),
                **_operation(tag, method, summary, body, required, answer),
            }
            parameters = _path_parameters(path)
            if _records_idempotency_key(method, path):
                parameters.append(idempotency_header_object())
            if parameters:
                operation["parameters"] = parameters
            paths.setdefault(path, {})[method] = operation
    # TTAPI's fetch also answers GET ?jobId=.
    paths["/midjourney/v1/fetch"]["get"] = {
        "operationId": _operation_id(TTAPI_TAG, "get", "/midjourney/v1/fetch"),
        **_operation(TTAPI_TAG, "get", "A job's status and result", {}, [], "fetch"),
        "parameters": [{"name": "jobId", "in": "query", "required": True, "schema": _STR}],
    }
    result["tags"] = [
        {"name": "v1", "description": "The native API (`/api/v1/…`)."},
        {
            "name": MJPROXY_TAG,
            "description": "midjourney-proxy compatible (`/mj/…`; also `/mj-fast/mj/…`, "
            "`/mj-relax/mj/…`, `/mj-turbo/mj/…`, where the prefix picks the mode).",
        },
        {"name": TTAPI_TAG, "description": "TTAPI compatible (`/midjourney/v1/…`)."},
    ]
    return result


#: drf-spectacular settings of ``/api/schema/all/``: all three dialects, linked to the dashboard.
_BASE = settings.PUBLIC_BASE_URL
ALL_DIALECTS_SETTINGS: dict[str, Any] = {
    "DESCRIPTION": (
        "Midjourney-style image generation in three dialects over one key: the native v1 API "
        "(`/api/v1/…`), a midjourney-proxy compatible API (`/mj/…`) and a TTAPI compatible API "
        "(`/midjourney/v1/…`). Send the key as `Authorization: Bearer …`, `mj-api-secret` or "
        "`TT-API-KEY`; test keys (`mjg_test_…`) are free.\n\n"
        "```\n"
        f"curl -s {_BASE}/mj/submit/imagine -H 'mj-api-secret: mjg_live_…' \\\n"
        "  -H 'Content-Type: application/json' -d '{\"prompt\": \"a lighthouse at dawn\"}'\n"
        f"curl -s {_BASE}/midjourney/v1/imagine -H 'TT-API-KEY: mjg_live_…' \\\n"
        "  -H 'Content-Type: application/json' -d '{\"prompt\": \"a lighthouse at dawn\"}'\n"
        "```\n\n"
        "[Back to the dashboard](/) · [Your API keys, base URLs and curl examples](/keys/)"
    ),
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.protocols.openapi_dialects.add_dialects",
    ],
}
