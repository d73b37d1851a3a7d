"""TTAPI compatible endpoints (``/midjourney/v1/…``, SPEC §6.2).

Envelope ``{status: SUCCESS|FAILED, message, data}``; a submit answers ``data.jobId``. Errors
carry the HTTP status of the domain error (400 validation, 401 key, 402 balance, 403 flag,
404 job, 429 tier limit or rate limit with ``Retry-After``, 500 unexpected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import Http404
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import OrganizationAPIView
from apps.core.errors import NotFound, ServiceError
from apps.tasks.actions import ButtonRef, ByName, press_spec
from apps.tasks.enums import Action, parse_mode
from apps.tasks.errors import InputError, dialect_error, domain_label
from apps.tasks.models import Protocol
from apps.tasks.selectors import task_fetch, task_get
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.inputs import Caller, ClientEcho
from apps.tasks.services.press import ModalInput, task_press
from apps.tasks.services.seeds import task_image_seed
from apps.tasks.services.submit import task_submit
from apps.tasks.services.video import task_submit_video

from ..common import (
    LenientJSONParser,
    bool_field,
    caller_of,
    drf_error_response,
    json_object,
    logger,
    optional_text,
    string_list,
    text_field,
    with_retry_after,
    with_tier_limit_hint,
)
from .actions import INPAINT_KEY, ttapi_names
from .payloads import job_json

OK = "SUCCESS"
FAILED = "FAILED"


def envelope(status: str, message: str, data: Any = None) -> dict[str, Any]:
    return {"status": status, "message": message, "data": data}


def _failed(message: str) -> dict[str, Any]:
    return envelope(FAILED, message)


#: TTAPI's names for the domain's fields.
_WIRE_FIELDS = {
    "mask": "mask",
    "hook_url": "hookUrl",
    "parent": "jobId",
    "task": "jobId",
    "button": "action",
    "motion": "manual",
    "batch_size": "bs",
    "end_image": "endingUrl",
    # Chosen by a header in this dialect (apps.protocols.common.POOL_HEADER).
    "pool": "X-Mjgate-Pool",
}


def wire_field(field: str, index: int | None, action: str | None) -> str:
    """A domain field as TTAPI's request names it (``images[1]`` → ``imgBase64Array[1]``)."""
    if field == "images":
        if action == Action.DESCRIBE:
            return "base64"
        if action == Action.VIDEO:
            return "imageUrl"
        return domain_label("imgBase64Array", index)
    return _WIRE_FIELDS.get(field) or domain_label(field, index)


def ttapi_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = with_tier_limit_hint(dialect_error(exc, wire_field))
    if isinstance(exc, Http404):
        exc = NotFound("Job not found.")
    if isinstance(exc, ServiceError):
        return with_retry_after(Response(_failed(exc.message), status=exc.http_status), exc)
    response = drf_error_response(exc, envelope=_failed, validation_status=400)
    if response is not None:
        return response
    logger.exception("TTAPI request failed", exc_info=exc)
    return Response(_failed("Internal error; the request was not completed."), status=500)


class TtapiView(OrganizationAPIView):
    required_key_flags = ("midjourney",)
    parser_classes = [LenientJSONParser]
    schema = None  # documented in docs/api.md; the OpenAPI schema describes the native API

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Any]:
        return ttapi_exception_handler

    def body(self, request: Request) -> dict[str, Any]:
        return json_object(request.data)

    @property
    def caller(self) -> Caller:
        return caller_of(self, Protocol.TTAPI)


def _echo(data: dict[str, Any], *, options: bool = False) -> ClientEcho:
    metadata = None
    if options:
        timeout = data.get("timeout")
        metadata = {
            "ttapi": {
                "getUImages": bool(data.get("getUImages")),
                "timeout": timeout
                if isinstance(timeout, int) and not isinstance(timeout, bool)
                else None,
            }
        }
    return ClientEcho(notify_hook=text_field(data, "hookUrl"), metadata=metadata)


def _accepted(outcome: SubmitOutcome) -> Response:
    # TTAPI's older documents name the id ``jobId`` and its current ones ``job_id``; clients
    # exist for both.
    task_id = outcome.task.id
    return Response(envelope(OK, "success", {"jobId": task_id, "job_id": task_id}))


class SubmitView(TtapiView):
    writes = True

    def post(self, request: Request) -> Response:
        return _accepted(self.submit(self.body(request)))

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:  # pragma: no cover - abstract
        raise NotImplementedError


def _requested_mode(data: dict[str, Any]) -> str | None:
    """``mode``; else ``model`` when it names a mode, as TTAPI's own request examples spell it
    (``"model": "relax"``) — ignoring it would run and charge the job as FAST."""
    mode = optional_text(data, "mode")
    if mode:
        return mode
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise exceptions.ValidationError({"model": "Must be a text: a mode (fast, relax, turbo)."})
    return model if isinstance(model, str) and parse_mode(model) else None


class ImagineView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit(
            caller=self.caller,
            action=Action.IMAGINE,
            prompt=text_field(data, "prompt"),
            mode=_requested_mode(data),
            echo=_echo(data, options=True),
        )


class DescribeView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        image = text_field(data, "base64") or text_field(data, "url")
        return task_submit(
            caller=self.caller,
            action=Action.DESCRIBE,
            images=[image] if image else [],
            mode=_requested_mode(data),
            echo=_echo(data),
        )


class BlendView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        images = string_list(data, "imgBase64Array") or string_list(data, "base64Array")
        return task_submit(
            caller=self.caller,
            action=Action.BLEND,
            images=images,
            dimensions=optional_text(data, "dimensions"),
            mode=_requested_mode(data),
            echo=_echo(data, options=True),
        )


def _press(view: TtapiView, *, button: ButtonRef, data: dict[str, Any]) -> SubmitOutcome:
    """Press a button of ``jobId``. TTAPI has no modal endpoint: a two-step button gets its
    second step (``prompt``, ``mask``) in the same call, validated and accepted atomically.
    So does remix: a variation, reroll or pan with a ``prompt`` is remixed with it, and one
    without never waits for a prompt (whatever the key's remix default)."""
    return task_press(
        caller=view.caller,
        parent_id=text_field(data, "jobId"),
        button=button,
        mode=_requested_mode(data),
        echo=_echo(data, options=True),
        modal=ModalInput(prompt=optional_text(data, "prompt"), mask=optional_text(data, "mask")),
        remix=False,
    )


class ActionView(SubmitView):
    """``{jobId, action}`` with TTAPI's names: ``upsample1``, ``variation2``, ``reroll``,
    ``high_variation``, ``low_variation``, ``upscale_subtle``, ``zoom_out_2x``, ``pan_left`` …"""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        name = text_field(data, "action")
        if not name.strip():
            raise exceptions.ValidationError({"action": "This field is required."})
        return _press(
            self, button=ByName(name, extra_names=ttapi_names, offer_extra_names=True), data=data
        )


class InpaintView(SubmitView):
    """Vary (Region): ``{jobId, mask, prompt}`` — the button and its mask in one call."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        if not text_field(data, "mask"):
            raise exceptions.ValidationError({"mask": "This field is required."})
        # By TTAPI's name for the button, so a job without it is told what it offers in
        # TTAPI's names.
        name = ttapi_names(press_spec(INPAINT_KEY), None)[0]
        button = ByName(name, extra_names=ttapi_names, offer_extra_names=True)
        return _press(self, button=button, data=data)


class VideoSubmitView(SubmitView):
    """``POST /midjourney/video/submit`` as TTAPI documents it: ``{prompt, imageUrl, endingUrl
    (the end frame), manual (low|high motion), bs (1|2|4), resolution (sd|hd), loop, mode,
    hookUrl}``."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        image = text_field(data, "imageUrl") or text_field(data, "base64")
        return task_submit_video(
            caller=self.caller,
            prompt=text_field(data, "prompt"),
            images=[image] if image else [],
            motion=optional_text(data, "manual") or optional_text(data, "motion"),
            batch_size=data.get("bs"),
            loop=bool_field(data, "loop"),
            resolution=optional_text(data, "resolution"),
            end_image=optional_text(data, "endingUrl"),
            mode=_requested_mode(data),
            echo=_echo(data),
        )


class VideoExtendView(SubmitView):
    """``POST /midjourney/video/extend``: ``{jobId, index (0-3), manual, animateMode
    (auto|manual, with prompt), bs, hookUrl}`` — four more seconds of one clip."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        raw = data.get("index", 0)
        if isinstance(raw, bool) or str(raw).strip() not in ("0", "1", "2", "3"):
            raise exceptions.ValidationError(
                {"index": "Must be 0, 1, 2 or 3: which video of the job to extend."}
            )
        animate_mode = text_field(data, "animateMode").strip().lower() or "auto"
        if animate_mode not in ("auto", "manual"):
            raise exceptions.ValidationError({"animateMode": "Must be auto or manual."})
        prompt = text_field(data, "prompt")
        if animate_mode == "manual" and not prompt.strip():
            raise exceptions.ValidationError({"prompt": "animateMode manual needs a prompt."})
        if animate_mode == "auto" and prompt.strip():
            raise exceptions.ValidationError(
                {"prompt": "animateMode auto takes no prompt; use manual to guide the motion."}
            )
        job_id = text_field(data, "jobId")
        if not job_id.strip():
            raise exceptions.ValidationError({"jobId": "This field is required."})
        try:
            return task_submit_video(
                caller=self.caller,
                prompt=prompt,
                parent_id=job_id,
                index=int(str(raw).strip()) + 1,
                extend=True,
                motion=optional_text(data, "manual") or optional_text(data, "motion"),
                batch_size=data.get("bs"),
                mode=_requested_mode(data),
                echo=_echo(data),
            )
        except InputError as exc:
            count = (exc.details or {}).get("count")
            if exc.field != "index" or not isinstance(count, int):
                raise
            # TTAPI counts a job's videos from 0; say it in its numbers.
            raise exceptions.ValidationError(
                {"index": f"The job has {count} video(s): index goes from 0 to {count - 1}."}
            ) from exc


class SeedView(TtapiView):
    #: A read sent as POST: an Idempotency-Key is not recorded (a replay would freeze a stale
    #: answer for a day).
    idempotent_methods = ()

    def post(self, request: Request) -> Response:
        task = task_get(
            organization=self.organization, task_id=text_field(self.body(request), "jobId")
        )
        found = task_image_seed(organization=self.organization, task_id=task.id)
        seed = str(found) if found is not None else None
        return Response(envelope(OK, "success", {"jobId": task.id, "seed": seed}))


class FetchView(TtapiView):
    """``GET ?jobId=`` or ``POST {jobId}``."""

    #: A read sent as POST: an Idempotency-Key is not recorded (a replay would freeze a stale
    #: answer for a day).
    idempotent_methods = ()
    query_params = ("jobId",)

    def get(self, request: Request) -> Response:
        return self._fetch(str(request.query_params.get("jobId", "")))

    def post(self, request: Request) -> Response:
        return self._fetch(text_field(self.body(request), "jobId"))

    def _fetch(self, job_id: str) -> Response:
        if not job_id.strip():
            raise exceptions.ValidationError({"jobId": "This field is required."})
        return Response(job_json(task_fetch(organization=self.organization, task_id=job_id)))
