"""midjourney-proxy compatible endpoints (SPEC §6.1).

Thin translators: read the proxy's JSON, call one task service, answer in the proxy's envelope
``{code, description, result, properties}`` (all four keys, always). Codes: 1 started,
22 queued, 21 waiting for ``/submit/modal``, 3 task not found, 4 validation error (including
insufficient balance and mode mismatch), 23 tier limit, 24 banned prompt, 9 internal error.

Business outcomes answer HTTP 200 with their code, as midjourney-proxy does (clients read
``code``); authentication and permission failures answer 401/403, rate limits 429 with
``Retry-After``, and unexpected errors 500 with code 9.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpResponse, QueryDict
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request, is_form_media_type
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.core.api import OrganizationAPIView
from apps.core.authentication import ApiKeyAuthentication
from apps.core.errors import (
    BannedPrompt,
    ConcurrencyLimitReached,
    NotFound,
    ServiceError,
)
from apps.core.idempotency import HEADER as IDEMPOTENCY_HEADER
from apps.core.permissions import HasApiKey
from apps.core.ratelimit import ApiKeyRateThrottle, pending_count_give_back, request_size_check
from apps.tasks.actions import ByName, press_spec
from apps.tasks.enums import Action
from apps.tasks.errors import InputError, dialect_error, domain_label
from apps.tasks.models import Protocol
from apps.tasks.selectors import (
    task_fetch,
    task_list,
    task_page,
    task_queue_list,
)
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import ClientEcho
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.seeds import task_image_seed
from apps.tasks.services.submit import task_submit
from apps.tasks.services.uploads import images_upload
from apps.tasks.services.video import task_submit_video

from ..common import (
    LenientJSONParser,
    bool_field,
    caller_of,
    drf_error_response,
    json_object,
    logger,
    optional_text,
    state_field,
    string_list,
    text_field,
    with_retry_after,
    with_tier_limit_hint,
)
from ..task_fields import epoch_ms, queue_estimates_prefetch, stored_file_url
from .actions import CHANGE_ACTIONS, SIMPLE_CHANGE_LETTERS
from .payloads import queued_task_json

SUCCESS = 1
NOT_FOUND = 3
VALIDATION_ERROR = 4
FAILURE = 9
EXISTED = 21
IN_QUEUE = 22
QUEUE_REJECTED = 23
BANNED_PROMPT = 24

#: How many tasks ``GET /mj/task/list`` returns (newest first).
LIST_LIMIT = 100
#: Most ids one ``list-by-condition`` call may ask for.
MAX_CONDITION_IDS = 1000


def envelope(
    code: int, description: str, result: Any = None, properties: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "code": code,
        "description": description,
        "result": result,
        "properties": properties or {},
    }


def _service_error_code(exc: ServiceError) -> int:
    if isinstance(exc, BannedPrompt):
        return BANNED_PROMPT
    if isinstance(exc, ConcurrencyLimitReached):
        return QUEUE_REJECTED
    if isinstance(exc, NotFound):
        return NOT_FOUND
    return VALIDATION_ERROR if exc.http_status < 500 else FAILURE


def _rejected(message: str) -> dict[str, Any]:
    return envelope(VALIDATION_ERROR, message)


#: The proxy's names for the domain's fields.
_WIRE_FIELDS = {
    "mask": "maskBase64",
    "hook_url": "notifyHook",
    "parent": "taskId",
    "task": "taskId",
    "button": "customId",
    "batch_size": "batchSize",
    "resolution": "videoType",
    "end_image": "endImage",
    # Chosen by a header in this dialect (apps.protocols.common.POOL_HEADER).
    "pool": "X-Mjgate-Pool",
}
_SWAP_FACE_IMAGES = ("sourceBase64", "targetBase64")


def wire_field(field: str, index: int | None, action: str | None) -> str:
    """A domain field as the proxy's request names it (``images[1]`` → ``base64Array[1]``)."""
    if field == "images":
        if action == Action.DESCRIBE:
            return "base64"
        if action == Action.SWAP_FACE:
            return _SWAP_FACE_IMAGES[index] if index in (0, 1) else _SWAP_FACE_IMAGES[0]
        if action == Action.VIDEO:
            return "image"
        return domain_label("base64Array", index)
    return _WIRE_FIELDS.get(field) or domain_label(field, index)


def mjproxy_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    view = context.get("view")
    exc = with_tier_limit_hint(dialect_error(exc, wire_field))
    if isinstance(exc, Http404):
        exc = NotFound("Task not found.")
    if isinstance(exc, NotFound) and getattr(view, "not_found_empty", False):
        return HttpResponse(status=404)
    if isinstance(exc, ServiceError):
        properties: dict[str, Any] = {}
        if isinstance(exc, BannedPrompt):
            properties["bannedWord"] = exc.banned_word
        if "retry_after" in exc.details:
            # The same hint as the native API's Retry-After, where proxy clients read it.
            properties["retryAfter"] = exc.details["retry_after"]
        code = _service_error_code(exc)
        if code == NOT_FOUND:
            status = getattr(view, "not_found_status", 200)
        elif exc.http_status in (403, 413):
            status = exc.http_status
        else:
            status = 200 if code != FAILURE else exc.http_status
        response = Response(envelope(code, exc.message, None, properties), status=status)
        return with_retry_after(response, exc)
    # Bad input is a business outcome (HTTP 200, code 4), like the proxy's own validation.
    drf_response = drf_error_response(exc, envelope=_rejected, validation_status=200)
    if drf_response is not None:
        return drf_response
    logger.exception("mj-proxy request failed", exc_info=exc)
    return Response(envelope(FAILURE, "Internal error; the request was not completed."), status=500)


class MjProxyView(OrganizationAPIView):
    """Base of every ``/mj…`` endpoint: midjourney flag, lenient JSON, the proxy's envelope."""

    required_key_flags = ("midjourney",)
    parser_classes = [LenientJSONParser]
    schema = None  # documented in docs/api.md; the OpenAPI schema describes the native API

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Any]:
        return mjproxy_exception_handler

    @property
    def path_mode(self) -> str | None:
        mode = self.kwargs.get("path_mode")
        return str(mode) if mode else None

    def body(self, request: Request) -> dict[str, Any]:
        return json_object(request.data)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        """DRF's negotiation, skipped where its answer is known: the proxy's routes render JSON
        only, and with no ``Accept`` header or ``*/*`` (what its clients send) and no
        ``?format=`` override DRF can only pick that renderer and its media type. Every other
        request negotiates as DRF does (``application/json; indent=4``, a 406 …)."""
        renderers = self.get_renderers()
        if (
            len(renderers) == 1
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and getattr(self, "format_kwarg", None) is None
            and api_settings.URL_FORMAT_OVERRIDE not in request._request.GET
        ):
            return renderers[0], renderers[0].media_type
        return super().perform_content_negotiation(request, force)


def submit_envelope(outcome: SubmitOutcome) -> dict[str, Any]:
    task = outcome.task
    if outcome.result == SubmitOutcome.MODAL:
        return envelope(
            EXISTED,
            "Waiting for window confirm",
            task.id,
            {"finalPrompt": task.prompt_en or None, "remix": True},
        )
    if outcome.result == SubmitOutcome.QUEUED:
        ahead = max(outcome.queue_position - 1, 0)
        properties: dict[str, Any] = {"numberOfQueues": ahead}
        if outcome.expected_start is not None:
            properties["estimatedStartTime"] = epoch_ms(outcome.expected_start)
        return envelope(IN_QUEUE, f"In queue, there are {ahead} tasks ahead", task.id, properties)
    return envelope(SUCCESS, "Submit success", task.id)


def submit_answer(outcome: SubmitOutcome) -> Response:
    return Response(submit_envelope(outcome))


_TRUE = (True, 1, "true", "True", "TRUE", "1")
_FALSE = (False, 0, "false", "False", "FALSE", "0", "")


def _remix_flag(data: dict[str, Any]) -> bool | None:
    """``enableRemix``: on a press, whether it opens the remix prompt step (code 21); on a new
    task, remix mode for its follow-ups. Left out: the key's default decides."""
    value = data.get("enableRemix")
    if value is None:
        return None
    if value in _TRUE and not isinstance(value, float):
        return True
    if value in _FALSE and not isinstance(value, float):
        return False
    raise exceptions.ValidationError({"enableRemix": "Must be true or false."})


def _echo(data: dict[str, Any]) -> ClientEcho:
    return ClientEcho(notify_hook=text_field(data, "notifyHook"), state=state_field(data))


class SubmitView(MjProxyView):
    """Base of the submit routes. A plain submit (POST, no ``Idempotency-Key``, no query
    string, JSON answer without negotiation) skips DRF's request cycle (:meth:`dispatch`)."""

    writes = True
    #: The request's ``enableRemix`` (``None``: not given).
    remix: bool | None = None

    def post(self, request: Request, **kwargs: Any) -> Response:
        return Response(self.answer(self.body(request)))

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        """The envelope answering the request's body ``data``."""
        self.remix = _remix_flag(data)
        return submit_envelope(self.submit(data))

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """DRF's dispatch, or for a plain submit the same steps without its ``Request``,
        negotiation, ``Response`` and renderer cycle: authentication, permissions, throttle,
        body size and parsing run the same code in the same order; the answer is the bytes
        and headers DRF would send. Any exception goes to DRF's own handling, so every error
        is answered exactly as on DRF's path. What the plain path needs from DRF it uses as
        DRF does: the key's user and auth are set on the Django request (DRF sets them there
        too), the permission and throttle checks are the view's own methods."""
        if not _lean_possible(self, request, kwargs):
            return super().dispatch(request, *args, **kwargs)
        self.args = args
        self.kwargs = kwargs
        self.request = request
        self.headers = self.default_response_headers
        try:
            self._lean_initial(request)
            content = self._lean_render(self.answer(json_object(_lean_data(request))))
        except Exception as exc:
            drf_request = self.initialize_request(request, *args, **kwargs)
            # As authentication left them (DRF's setters; nothing authenticates again).
            drf_request.user, drf_request.auth = _lean_identity(request)
            self.request = drf_request
            response = self.handle_exception(exc)
            self.response = self.finalize_response(drf_request, response, *args, **kwargs)
            return self.response
        answer = HttpResponse(content, content_type=_LEAN_RENDERER.media_type)
        for key, value in self.headers.items():
            answer[key] = value
        return answer

    def _lean_initial(self, request: Any) -> None:
        """What ``OrganizationAPIView.initial`` does for a plain submit, in its order."""
        self._idempotency_record = None
        try:
            _lean_authenticate(request)
            self.check_permissions(request)
            self.check_throttles(request)
            request_size_check(content_length=request.META.get("CONTENT_LENGTH"))
        except BaseException:
            pending_count_give_back(request)
            raise
        self._bind_api_key(request)

    def _lean_render(self, data: dict[str, Any]) -> bytes:
        return bytes(_LEAN_RENDERER.render(data, _LEAN_RENDERER.media_type, {}))

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def caller(self) -> Any:
        return caller_of(self, Protocol.MJPROXY)


#: The one renderer of the proxy's routes (DRF's JSONRenderer with the API's settings).
_LEAN_RENDERER = JSONRenderer()


def _lean_possible(view: SubmitView, request: Any, kwargs: dict[str, Any]) -> bool:
    """Whether DRF's cycle would do nothing for ``request`` that the plain path does not:
    a POST to a submit route that answers through :meth:`SubmitView.answer`, with the
    project's authentication, permission, throttle, parser and renderer, no
    ``Idempotency-Key`` (replays and records live in DRF's cycle), no query string (no
    ``?format=``) and no negotiation to make (no ``Accept`` or ``*/*``)."""
    meta = request.META
    cls = type(view)
    return (
        request.method == "POST"
        and IDEMPOTENCY_HEADER not in meta
        and not meta.get("QUERY_STRING")
        and meta.get("HTTP_ACCEPT", "*/*") == "*/*"
        and "format" not in kwargs
        and cls.post is SubmitView.post
        and cls.dispatch is SubmitView.dispatch
        and _lean_classes(cls)
    )


_lean_views: dict[type[SubmitView], bool] = {}


def _lean_classes(cls: type[SubmitView]) -> bool:
    known = _lean_views.get(cls)
    if known is None:
        known = _lean_views[cls] = _lean_classes_check(cls)
    return known


def _lean_classes_check(cls: type[SubmitView]) -> bool:
    return (
        list(cls.authentication_classes) == [ApiKeyAuthentication]
        and list(cls.permission_classes) == [HasApiKey]
        and list(cls.throttle_classes) == [ApiKeyRateThrottle]
        and list(cls.parser_classes) == [LenientJSONParser]
        and list(cls.renderer_classes) == [JSONRenderer]
        and cls.versioning_class is None
        and cls.content_negotiation_class is DefaultContentNegotiation
    )


def _lean_authenticate(request: Any) -> None:
    """DRF's ``Request._authenticate`` with the one authenticator, on the Django request (DRF
    sets ``user`` and ``auth`` there as well)."""
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except exceptions.APIException:
        request.user, request.auth = AnonymousUser(), None
        raise
    request.user, request.auth = found if found is not None else (AnonymousUser(), None)


def _lean_identity(request: Any) -> tuple[Any, Any]:
    """The user and auth the plain path found (none yet: DRF's unauthenticated pair)."""
    return getattr(request, "user", None) or AnonymousUser(), getattr(request, "auth", None)


def _lean_data(request: Any) -> Any:
    """``request.data`` as DRF's ``Request`` parses it with ``LenientJSONParser``: no body
    (a Content-Length of 0 or none readable) is ``{}``, else the parser reads the stream."""
    meta = request.META
    try:
        length = int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (ValueError, TypeError):
        length = 0
    if length == 0:
        content_type = meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", ""))
        if content_type and is_form_media_type(content_type):
            return QueryDict("", encoding=request.encoding)
        return {}
    stream = request if not request._read_started else io.BytesIO(request.body)
    return LenientJSONParser().parse(stream, None, None)


def _requested_mode(data: dict[str, Any]) -> str | None:
    """``mode``, or the first of ``accountFilter.modes`` (newer proxy clients send that)."""
    mode = optional_text(data, "mode")
    if mode:
        return mode
    account_filter = data.get("accountFilter")
    if account_filter is None:
        return None
    # Its other keys (an instance, a channel, remix) pick an upstream account of the proxy's,
    # which we choose ourselves; only a malformed filter is an error.
    if not isinstance(account_filter, dict):
        raise exceptions.ValidationError({"accountFilter": "Must be an object."})
    modes = account_filter.get("modes")
    if modes is None:
        return None
    if not isinstance(modes, list) or not all(isinstance(mode, str) for mode in modes):
        raise exceptions.ValidationError(
            {"accountFilter": "modes must be a list of mode names (FAST, RELAX, TURBO)."}
        )
    return modes[0] if modes else None


class ImagineView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        prompt = text_field(data, "prompt")
        # The niji bot is Midjourney's anime model: on one upstream it is the --niji flag.
        if text_field(data, "botType").upper() == "NIJI_JOURNEY" and "--niji" not in prompt:
            prompt = f"{prompt} --niji".strip()
        images = string_list(data, "base64Array")
        if not images and text_field(data, "base64"):
            # The proxy's first API took one reference image as ``base64``; it still accepts
            # it (deprecated) and clients such as chat web UIs still send it.
            images = [text_field(data, "base64")]
        return task_submit(
            caller=self.caller,
            action=Action.IMAGINE,
            prompt=prompt,
            images=images,
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )


class ActionView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_press(
            caller=self.caller,
            parent_id=text_field(data, "taskId"),
            custom_id=text_field(data, "customId"),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=self.remix,
        )


#: trueai-org's ``videoType`` (its SubmitVideoDTO): SD and HD.
_VIDEO_TYPES = {"vid_1.1_i2v_480": "480p", "vid_1.1_i2v_720": "720p"}


def _resolution(video_type: str | None) -> str | None:
    """The domain's resolution for a ``videoType``; anything else goes on to be refused."""
    if video_type is None:
        return None
    return _VIDEO_TYPES.get(video_type.strip().lower(), video_type)


#: ``/mj/submit/video`` ``action``: a new video (animate), or extend a clip of ``taskId``.
_VIDEO_ACTIONS = ("", "animate", "video", "extend")


class VideoView(SubmitView):
    """trueai-org's Plus route: ``{prompt, motion, image|base64, endImage, batchSize, loop,
    videoType (vid_1.1_i2v_480|vid_1.1_i2v_720), action: "extend", taskId, index, notifyHook,
    state}`` (its ``SubmitVideoDTO``)."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        action = text_field(data, "action").strip().lower()
        if action not in _VIDEO_ACTIONS:
            raise exceptions.ValidationError(
                {"action": "Use extend to extend a video, or leave action out to animate."}
            )
        image = text_field(data, "image") or text_field(data, "base64")
        try:
            return task_submit_video(
                caller=self.caller,
                prompt=text_field(data, "prompt"),
                images=[image] if image else [],
                parent_id=text_field(data, "taskId") or None,
                index=_video_index(data.get("index")),
                extend=action == "extend",
                motion=optional_text(data, "motion"),
                batch_size=data.get("batchSize"),
                loop=bool_field(data, "loop"),
                resolution=_resolution(optional_text(data, "videoType")),
                end_image=optional_text(data, "endImage"),
                mode=_requested_mode(data),
                path_mode=self.path_mode,
                echo=_echo(data),
            )
        except InputError as exc:
            count = (exc.details or {}).get("count")
            if exc.field != "index" or not isinstance(count, int):
                raise
            # Say it in the route's numbers, which count from 0.
            noun = "clip(s)" if action == "extend" else "image(s)"
            raise exceptions.ValidationError(
                {"index": f"The task has {count} {noun}: index goes from 0 to {count - 1}."}
            ) from exc


def _video_index(raw: Any) -> int | None:
    """trueai-org's ``SubmitVideoDTO.index`` counts from 0 (0-3: its proxy presses
    ``…_extend::{index + 1}``, and our mjproxy engine sends ``index - 1``); ours from 1."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or str(raw).strip() not in ("0", "1", "2", "3"):
        raise exceptions.ValidationError(
            {
                "index": "Must be 0, 1, 2 or 3 (counted from 0): the clip to extend, or the image "
                "of the task to animate."
            }
        )
    return int(str(raw).strip()) + 1


class ModalView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit_modal(
            caller=self.caller,
            task_id=text_field(data, "taskId"),
            prompt=optional_text(data, "prompt"),
            mask=optional_text(data, "maskBase64"),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
        )


class DescribeView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        image = text_field(data, "base64") or text_field(data, "link")
        return task_submit(
            caller=self.caller,
            action=Action.DESCRIBE,
            images=[image] if image else [],
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )


class BlendView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit(
            caller=self.caller,
            action=Action.BLEND,
            images=string_list(data, "base64Array"),
            dimensions=optional_text(data, "dimensions"),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )


class ShortenView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        return task_submit(
            caller=self.caller,
            action=Action.SHORTEN,
            prompt=text_field(data, "prompt"),
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
            remix=bool(self.remix),
        )


class SwapFaceView(SubmitView):
    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        source, target = text_field(data, "sourceBase64"), text_field(data, "targetBase64")
        return task_submit(
            caller=self.caller,
            action=Action.SWAP_FACE,
            images=[source, target] if source or target else [],
            mode=_requested_mode(data),
            path_mode=self.path_mode,
            echo=_echo(data),
        )


def _press_legacy(
    view: SubmitView, *, task_id: str, key: str, index: int | None, data: dict[str, Any]
) -> SubmitOutcome:
    """Legacy change endpoints name a button in the proxy's words; press it by our name for
    it, so REROLL on a describe result is its "describe again", as the proxy does."""
    return task_press(
        caller=view.caller,
        parent_id=task_id,
        button=ByName(press_spec(key).name(index)),
        mode=_requested_mode(data),
        path_mode=view.path_mode,
        echo=_echo(data),
        remix=view.remix,
    )


class ChangeView(SubmitView):
    """``{taskId, action: UPSCALE|VARIATION|REROLL, index}`` (the proxy's first API)."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        change = CHANGE_ACTIONS.get(text_field(data, "action").upper())
        if change is None:
            raise exceptions.ValidationError({"action": "Must be UPSCALE, VARIATION or REROLL."})
        key, numbered = change
        index = None
        if numbered:
            index = data.get("index")
            if isinstance(index, str) and index.isdigit():
                index = int(index)
            if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 4:
                raise exceptions.ValidationError({"index": "Must be 1, 2, 3 or 4."})
        return _press_legacy(
            self, task_id=text_field(data, "taskId"), key=key, index=index, data=data
        )


_SIMPLE_CHANGE = re.compile(r"^\s*(?P<id>\S+)\s+(?P<button>[UV][1-4]|R)\s*$", re.IGNORECASE)


class SimpleChangeView(SubmitView):
    """``{content: "<taskId> U1"}`` with U1–U4, V1–V4 or R (reroll)."""

    def submit(self, data: dict[str, Any]) -> SubmitOutcome:
        match = _SIMPLE_CHANGE.match(text_field(data, "content"))
        if match is None:
            raise exceptions.ValidationError({"content": "Use '<taskId> U1' (U1–U4, V1–V4 or R)."})
        button = match["button"].upper()
        key, numbered = SIMPLE_CHANGE_LETTERS[button[0]]
        index = int(button[1:]) if numbered else None
        return _press_legacy(self, task_id=match["id"], key=key, index=index, data=data)


class UploadDiscordImagesView(MjProxyView):
    """``{base64Array: [data URL …]}`` → ``result``: the images' stable public URLs, to write
    into prompts (image prompts, ``--sref``, ``--cref``). The reference proxy puts them on
    Discord's CDN; ours are in our own storage, served like result files."""

    writes = True

    def post(self, request: Request, **kwargs: Any) -> Response:
        data = self.body(request)
        images = string_list(data, "base64Array")
        names = images_upload(caller=caller_of(self, Protocol.MJPROXY), images=images)
        return Response(envelope(SUCCESS, "Success", [stored_file_url(n) for n in names]))


class FetchView(MjProxyView):
    not_found_empty = True

    def get(self, request: Request, task_id: str, **kwargs: Any) -> Response:
        return Response(
            queued_task_json(task_fetch(organization=self.organization, task_id=task_id))
        )


class ListByConditionView(MjProxyView):
    #: A read sent as POST: an Idempotency-Key is not recorded (a replay would freeze a stale
    #: answer for a day).
    idempotent_methods = ()

    def post(self, request: Request, **kwargs: Any) -> Response:
        data = self.body(request)
        ids = data.get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise exceptions.ValidationError({"ids": "Must be a list of task ids."})
        if len(ids) > MAX_CONDITION_IDS:
            raise exceptions.ValidationError(
                {"ids": f"At most {MAX_CONDITION_IDS} ids per request."}
            )
        wanted = [str(i) for i in ids]
        found = {t.pk: t for t in task_list(organization=self.organization, ids=wanted)}
        queue_estimates_prefetch(found.values())
        seen: set[str] = set()
        tasks = []
        for task_id in wanted:
            if task_id in found and task_id not in seen:
                seen.add(task_id)
                tasks.append(queued_task_json(found[task_id]))
        return Response(tasks)


class ListView(MjProxyView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        tasks = task_page(organization=self.organization, limit=LIST_LIMIT)
        queue_estimates_prefetch(tasks)
        return Response([queued_task_json(t) for t in tasks])


class QueueView(MjProxyView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        tasks = list(task_queue_list(organization=self.organization))
        queue_estimates_prefetch(tasks)
        return Response([queued_task_json(t) for t in tasks])


class ImageSeedView(MjProxyView):
    not_found_status = 404

    def get(self, request: Request, task_id: str, **kwargs: Any) -> Response:
        found = task_image_seed(organization=self.organization, task_id=task_id)
        if found is None:
            # A clear answer rather than success with no result: clients print the seed.
            return Response(
                envelope(
                    VALIDATION_ERROR,
                    "This task has no seed yet: it is known once the task has finished "
                    "(or when its prompt sets --seed).",
                )
            )
        return Response(envelope(SUCCESS, "Success", str(found)))


class CancelView(MjProxyView):
    writes = True
    takes_no_body = True
    not_found_status = 404

    def post(self, request: Request, task_id: str, **kwargs: Any) -> Response:
        task = task_cancel(organization=self.organization, task_id=task_id, api_key=self.api_key)
        return Response(envelope(SUCCESS, "Cancelled", task.id))
