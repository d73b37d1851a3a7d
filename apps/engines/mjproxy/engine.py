"""The mjproxy engine: drives any midjourney-proxy-compatible upstream (SPEC §5, §6.1).

An account's ``options`` hold ``base_url`` (the address before ``/mj/…``), ``callbacks``
(true: the upstream is told to call us back) and optionally ``callback_base_url`` (how the
upstream reaches us, when that is not ``PUBLIC_BASE_URL``); its encrypted ``secrets`` hold
``secret`` (sent as ``mj-api-secret``) and the generated ``callback_token``.

* **Submit.** New work goes to ``/mj/submit/imagine|describe|blend|shorten`` and
  ``/mj/insight-face/swap`` with our stored input images as data URLs. A follow-up goes to
  ``/mj/submit/action`` with the *upstream's* task id and customId (see ``mapping``); when the
  upstream answers 21 the second step is sent to ``/mj/submit/modal`` with the prompt and, for
  Vary (Region), the mask. A manual animate or extend asking for a batch, loop, end frame or
  motion the upstream's button cannot carry goes to ``/mj/submit/video`` with them as fields
  instead (the parent's image, or ``action: extend``). Every job carries
  ``state = "mjgate:<our task id>"``, which is how ``find_job`` recognises a job an
  interrupted submit already started — that is what makes submits safe to resume
  (``idempotent_submit``).
* **Poll.** One ``POST /mj/task/list-by-condition`` covers every in-flight task of the
  account: the answer is kept in the cache for ``MJPROXY_POLL_CACHE_SECONDS`` so the per-task
  poll steps of one round share it. Upstreams without that endpoint are asked per task
  (``GET /mj/task/{id}/fetch``).
* **Results.** The engine downloads the finished image itself and hands the bytes to the
  lifecycle, which stores, splits and thumbnails them; the upstream's URL and ids never reach
  the task's public fields. See :meth:`MjproxyEngine._download` for which addresses may be
  fetched.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from apps.core.http import (
    OutboundHTTPError,
    ResponseTooLarge,
    Timeout,
    UnsafeURL,
    check_url,
    safe_download,
)
from apps.engines.base import (
    AccountView,
    Engine,
    Job,
    JobUpdate,
    ParentRef,
    PermanentEngineError,
    PollResult,
    ResultImage,
    ResultVideo,
    StoredFile,
    SubmitOutcomeUnknown,
    SubmitResult,
    TemporaryEngineError,
    register,
)
from apps.engines.models import UpstreamAccount

# The sandbox's clip reader: a poster from the first frame when an upstream sends none.
from apps.engines.sandbox.video import first_frame
from apps.tasks.enums import Action, ErrorCode
from apps.tasks.remix import is_remixed

from . import mapping
from .client import Answer, MjproxyClient, UpstreamOutcomeUnknown, UpstreamUnavailable, origin_of
from .services import mjproxy_callback_token_ensure

logger = logging.getLogger(__name__)

#: The Plus proxies' editor routes; an upstream without them answers 404.
EDITS_PATH = "/mj/submit/edits"
RETEXTURE_PATH = "/mj/submit/retexture"
#: trueai-org's Plus route for video (absent from novicezk's proxy).
VIDEO_PATH = "/mj/submit/video"
ACTION_PATH = "/mj/submit/action"
#: Our "Animate Manually" button (the id of Midjourney's animate form).
_MANUAL_ANIMATE = re.compile(
    r"^MJ::AnimateModal::(?P<hash>[^:\s]+)::(?P<n>\d+)::(?P<motion>low|high)::0$"
)
#: ``videoType`` of a resolution (trueai-org's ``SubmitVideoDTO``).
VIDEO_TYPES = {"480p": "vid_1.1_i2v_480", "720p": "vid_1.1_i2v_720"}
#: The largest video batch (clips per job): what we ask for unless the job says less, and so
#: the most clips of a finished job we download, whatever the upstream lists.
MAX_VIDEO_BATCH = 4
#: A seed the upstream tells us is Midjourney's ``--seed``: 0 … 2**32-1, as plain digits.
_SEED_RE = re.compile(r"[0-9]{1,10}")
PLUS_ONLY_PATHS = (EDITS_PATH, RETEXTURE_PATH)

OPTIONS = ("base_url", "callbacks", "callback_base_url")
SECRETS = ("secret", "callback_token")
STATE_PREFIX = "mjgate:"
#: A finished job reported by a callback is remembered this long for the poll that applies it.
CALLBACK_SNAPSHOT_SECONDS = 600
#: ``engine_state`` keys: polls in a row whose answer did not list the job, and since when.
MISSING_POLLS = "missing_polls"
MISSING_SINCE = "missing_since"
#: A job the upstream has stopped listing (a proxy restarted without persistence, an operator
#: cleared its tasks) is lost for good once it has been missing from this many answers in a
#: row *and* for this long: the task then fails with its hold released, instead of waiting
#: for the run timeout. Both, so neither a fast poll interval nor one slow round decides it.
MAX_MISSING_POLLS = 5
MISSING_GRACE_SECONDS = 120.0


_BOOL_WORDS = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off"})


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):  # JSON's 1e999 parses as inf
        return 0


def _video_batch(params: Mapping[str, Any]) -> int:
    """The clips a video job asks the upstream for: its ``batch_size`` (1, 2 or 4), else 4."""
    try:
        size = int(params.get("batch_size") or MAX_VIDEO_BATCH)
    except (TypeError, ValueError, OverflowError):
        size = MAX_VIDEO_BATCH
    return max(1, min(size, MAX_VIDEO_BATCH))


def _is_extend(params: Mapping[str, Any]) -> bool:
    """An extension: our route's ``extend``, or a pressed Extend button (``…_extend``)."""
    return bool(params.get("extend")) or str(params.get("variant", "")).endswith("_extend")


def _own_video_settings(params: Mapping[str, Any]) -> bool:
    """Whether a manual animate or extend (Animate Manually, a remixed Animate/Extend) asks
    for what the upstream's button cannot carry: a batch other than 4, a loop, an end frame
    or the other motion. Its form takes only a prompt, so such a job goes to the video route
    with the settings as fields instead."""
    if not params.get("manual"):
        return False
    button_motion = "high" if "high" in str(params.get("variant", "")) else "low"
    return (
        _video_batch(params) != MAX_VIDEO_BATCH
        or bool(params.get("loop"))
        or bool(params.get("end_frame"))
        or str(params.get("motion") or button_motion) != button_motion
    )


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def state_marker(job: Job) -> str:
    return f"{STATE_PREFIX}{job.task_id}"


def client_for(account: AccountView) -> MjproxyClient:
    return MjproxyClient(
        base_url=str(account.options.get("base_url") or ""),
        secret=str(account.secrets.get("secret") or ""),
        allow_private=account.operator_managed,
    )


def batch_cache_key(account_id: int) -> str:
    return f"mjproxy:batch:{account_id}"


def callback_cache_key(account_id: int, job_id: str) -> str:
    return f"mjproxy:callback:{account_id}:{job_id}"


def _data_url(file: StoredFile) -> str:
    mime = mimetypes.guess_type(file.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(file.read()).decode()}"


def _edit_image(image: StoredFile, mask: StoredFile) -> str:
    """The editor's one input as the Plus proxies take it: the picture with the area to repaint
    made transparent (our mask is white there), as a PNG data URL. Transparent parts of the
    picture itself (an enlarged canvas) stay transparent: they are repainted too."""
    try:
        with Image.open(io.BytesIO(image.read())) as raw:
            picture = raw.convert("RGBA")
        with Image.open(io.BytesIO(mask.read())) as raw_mask:
            painted = raw_mask.convert("L").resize(picture.size, Image.Resampling.NEAREST)
    except (OSError, UnidentifiedImageError) as exc:
        raise PermanentEngineError(
            "The editor's image or mask could not be read.", error_code=ErrorCode.INVALID_PARAMETER
        ) from exc
    keep = painted.point(lambda v: 0 if v >= 128 else 255)
    alpha = Image.composite(picture.getchannel("A"), keep, keep)
    picture.putalpha(alpha)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"


def _task_list(data: Any) -> list[Mapping[str, Any]]:
    """Task lists come bare or wrapped (``{"list": …}``, ``{"content": …}``) depending on the proxy."""
    if isinstance(data, Mapping):
        for key in ("list", "content", "records", "data", "result"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise UpstreamUnavailable(
            "The upstream's task list could not be read.", error_code=ErrorCode.UPSTREAM_ERROR
        )
    return [item for item in data if isinstance(item, Mapping)]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MjproxyEngine(Engine):
    name = "mjproxy"
    idempotent_submit = True

    def unknown_outcome_settle_seconds(self) -> float:
        # A proxy still waiting on Discord (an upload, its own queue) lists the job only once
        # it has made it; it had at least as long again as we waited for its answer.
        return 2 * float(settings.MJPROXY_HTTP_TIMEOUT)

    # The upstream's follow-ups act on its own jobs, which exist only on that account.
    follow_ups_need_parent_account = True
    # Midjourney picks the seed; the upstream tells it on request (GET …/image-seed).
    seed_from_upstream = True

    # --- configuration ---------------------------------------------------------------------

    def validate_options(self, options: dict[str, Any], secrets: dict[str, Any]) -> None:
        for key in options:
            if key not in OPTIONS:
                raise ValueError(
                    f"Unknown mjproxy option '{key}' (use base_url, callbacks, callback_base_url, "
                    "secret)."
                )
        for key in secrets:
            if key not in SECRETS:
                raise ValueError(f"Unknown mjproxy secret '{key}' (use secret).")
        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url.strip():
            raise ValueError(
                "mjproxy needs base_url: the upstream's address before /mj/… "
                "(e.g. http://10.0.0.5:8080)."
            )
        for key in ("base_url", "callback_base_url"):
            value = options.get(key)
            if value in (None, ""):
                continue
            try:
                # Operator input: private addresses are fine, malformed URLs are not.
                check_url(str(value), allow_private=True, resolve_host=False)
            except UnsafeURL as exc:
                raise ValueError(f"{key}: {exc.message}") from exc
        callbacks = options.get("callbacks", False)
        if not isinstance(callbacks, bool) and str(callbacks).strip().lower() not in _BOOL_WORDS:
            raise ValueError("callbacks must be true or false.")

    # --- submit ------------------------------------------------------------------------------

    def submit(self, job: Job) -> SubmitResult:
        client = client_for(job.account)
        path, body = self._request(client, job)
        answer = client.post(path, body)
        if path in PLUS_ONLY_PATHS and answer.status == 404:
            raise PermanentEngineError(
                f"The upstream midjourney-proxy has no {path} route (a Plus feature), so it "
                f"cannot run {job.action} tasks.",
                error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
            )
        if path == VIDEO_PATH and answer.status in (404, 405):
            # A midjourney-proxy without the Plus routes (novicezk's) has no video.
            raise PermanentEngineError(
                "The upstream midjourney-proxy has no video route (/mj/submit/video, a Plus "
                "feature); run video tasks on a sandbox or a Plus upstream.",
                error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
            )
        accepted = self._accepted(answer)
        if (
            path == ACTION_PATH
            and is_remixed(job.params)
            and not accepted.modal
            and accepted.job_id
        ):
            self._refuse_unremixed(client, job, accepted.job_id)
        job_id = self._second_step(client, job, accepted)
        self._recovered(job.account)
        return SubmitResult(upstream_job_id=job_id, state={"account": job.account.id})

    def find_job(self, job: Job) -> SubmitResult | None:
        """The upstream job carrying this task's ``state`` marker, if an earlier submit made one.

        Looked up in the upstream's ``GET /mj/task/list``. An upstream we cannot ask (down, or
        without that endpoint) leaves the question open: the former is retried later, the latter
        fails the task, because submitting blind could run — and charge for — the job twice.
        """
        client = client_for(job.account)
        try:
            answer = client.get("/mj/task/list")
        except UpstreamUnavailable as exc:
            raise UpstreamOutcomeUnknown(
                "The upstream could not be asked whether it already has this job.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc
        cannot_tell = PermanentEngineError(
            "The worker sending this task stopped, and the upstream cannot list its jobs to "
            "tell whether it received it; it was not sent again to avoid running it twice.",
            error_code=ErrorCode.WORKER_LOST,
        )
        if answer.status != 200:
            raise cannot_tell
        try:
            listed = _task_list(answer.data)
        except UpstreamUnavailable as exc:
            # Not a list we can read, and it will not become one by asking again.
            raise cannot_tell from exc
        marker = state_marker(job)
        found = [item for item in listed if item.get("state") == marker]
        if not found:
            return None
        latest = max(found, key=lambda item: _int(item.get("submitTime")))
        job_id = str(latest.get("id") or "")
        if not job_id:
            return None
        if str(latest.get("status") or "").upper() == "MODAL":
            # The interrupted submit got as far as the first step of a two-step action.
            job_id = self._modal(client, job, job_id)
        self._recovered(job.account)
        return SubmitResult(upstream_job_id=job_id, state={"account": job.account.id})

    def _common(self, job: Job) -> dict[str, Any]:
        body: dict[str, Any] = {"state": state_marker(job)}
        hook = self.notify_hook(job.account)
        if hook:
            body["notifyHook"] = hook
        return body

    def notify_hook(self, account: AccountView) -> str:
        """Our callback URL for this account, or "" when callbacks are off."""
        options = account.options
        if not _bool(options.get("callbacks")):
            return ""
        token = str(account.secrets.get("callback_token") or "") or (
            mjproxy_callback_token_ensure(account_id=account.id)
        )
        base = str(options.get("callback_base_url") or settings.PUBLIC_BASE_URL).rstrip("/")
        path = reverse(
            "engine-callback",
            kwargs={"engine": self.name, "account_id": account.id, "token": token},
        )
        return f"{base}{path}"

    def _request(self, client: MjproxyClient, job: Job) -> tuple[str, dict[str, Any]]:
        body = self._common(job)
        params = job.params
        if job.parent is not None and params.get("custom_id"):
            if job.action == Action.VIDEO and _own_video_settings(params):
                # The upstream's animate/extend form would drop them (see the function).
                body["mode"] = job.mode
                return VIDEO_PATH, self._video_body(job, body, [])
            body.update(
                taskId=self._parent_job(job.account, job.parent),
                customId=self._their_custom_id(client, job, job.parent),
            )
            if is_remixed(params):
                # The Plus proxies answer 21 and take the remix prompt in /mj/submit/modal.
                body["enableRemix"] = True
            return ACTION_PATH, body
        # New work runs in the task's mode; upstreams that do not know the field ignore it.
        body["mode"] = job.mode
        inputs = [_data_url(image) for image in job.images]
        if job.action == Action.IMAGINE:
            body.update(prompt=job.prompt, base64Array=inputs)
            return "/mj/submit/imagine", body
        if job.action == Action.DESCRIBE:
            self._need_inputs(inputs, 1, "Describe")
            body["base64"] = inputs[0]
            return "/mj/submit/describe", body
        if job.action == Action.BLEND:
            self._need_inputs(inputs, 2, "Blend")
            body.update(base64Array=inputs, dimensions=params.get("dimensions") or "SQUARE")
            return "/mj/submit/blend", body
        if job.action == Action.SHORTEN:
            body["prompt"] = job.prompt
            return "/mj/submit/shorten", body
        if job.action == Action.EDIT:
            self._need_inputs(inputs, 1, "The editor")
            if job.mask is None:
                raise PermanentEngineError(
                    "The editor needs a stored mask.", error_code=ErrorCode.INVALID_PARAMETER
                )
            # trueai-org/midjourney-proxy takes edits and retextures as its SubmitEditsDTO
            # (src/Midjourney.Base/Dto/SubmitEditsDTO.cs; SubmitController.Edits/Retexture in
            # src/Midjourney.API/Controllers/SubmitController.cs): ``prompt`` and one
            # ``image`` (url or data URL), both required — the editor's picture composed with
            # its mask, the area to repaint transparent.
            body.update(prompt=job.prompt, image=_edit_image(job.images[0], job.mask))
            return EDITS_PATH, body
        if job.action == Action.RETEXTURE:
            self._need_inputs(inputs, 1, "Retexture")
            # The same SubmitEditsDTO (see above): ``prompt`` and the ``image`` to restyle.
            body.update(prompt=job.prompt, image=inputs[0])
            return RETEXTURE_PATH, body
        if job.action == Action.SWAP_FACE:
            self._need_inputs(inputs, 2, "Face swap")
            body.update(sourceBase64=inputs[0], targetBase64=inputs[1])
            return "/mj/insight-face/swap", body
        if job.action == Action.VIDEO:
            return VIDEO_PATH, self._video_body(job, body, inputs)
        raise PermanentEngineError(
            f"The mjproxy engine cannot start a {job.action} task without a parent task.",
            error_code=ErrorCode.INVALID_PARAMETER,
        )

    def _video_body(self, job: Job, body: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
        """trueai-org's ``/mj/submit/video`` body for a start frame, a parent image or an
        extension (``action: extend`` with the upstream's task id and the clip's index) —
        our video route's, or a manual animate/extend press's with settings of its own.

        Field names and values as its ``SubmitVideoDTO`` has them
        (trueai-org/midjourney-proxy ``src/Midjourney.Base/Dto/SubmitVideoDTO.cs``): the start
        and end frames in ``image`` and ``endImage`` (url or data URL), ``videoType``
        ``vid_1.1_i2v_480`` (SD) or ``vid_1.1_i2v_720`` (HD), ``index`` counted from 0.
        """
        params = job.params
        body.update(
            prompt=job.prompt,
            motion=params.get("motion") or "low",
            batchSize=_video_batch(params),
            loop=bool(params.get("loop")),
            videoType=VIDEO_TYPES.get(str(params.get("resolution") or ""), VIDEO_TYPES["480p"]),
        )
        ends = job.references.get("end") or ()
        if ends:
            body["endImage"] = _data_url(ends[0])
        index = int(params.get("index") or 1)
        parent = job.parent
        if _is_extend(params):
            if parent is None:
                raise PermanentEngineError(
                    "Extending needs the video task.", error_code=ErrorCode.INVALID_PARAMETER
                )
            body.update(
                action="extend", taskId=self._parent_job(job.account, parent), index=index - 1
            )
        elif inputs:
            body["image"] = inputs[0]
        elif parent is not None and parent.grid is not None:
            # The parent's image as we stored it (its split for a grid) is the start frame.
            frame = parent.splits[index - 1] if len(parent.splits) >= index else parent.grid
            body["image"] = _data_url(frame)
        else:
            raise PermanentEngineError(
                "A video needs a start frame.", error_code=ErrorCode.INVALID_PARAMETER
            )
        return body

    @staticmethod
    def _need_inputs(inputs: list[str], count: int, what: str) -> None:
        if len(inputs) < count:
            raise PermanentEngineError(
                f"{what} needs {count} stored input image(s).",
                error_code=ErrorCode.INVALID_PARAMETER,
            )

    @staticmethod
    def _parent_job(account: AccountView, parent: ParentRef) -> str:
        made_by = parent.state.get("account", parent.account_id)
        if parent.engine != MjproxyEngine.name or made_by != account.id:
            raise PermanentEngineError(
                "The upstream account that made the parent task is unavailable, so this "
                "follow-up cannot run.",
                error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            )
        if not parent.upstream_job_id:
            raise PermanentEngineError(
                "The parent task has no upstream job to act on.",
                error_code=ErrorCode.INVALID_PARAMETER,
            )
        return parent.upstream_job_id

    def _their_custom_id(self, client: MjproxyClient, job: Job, parent: ParentRef) -> str:
        pressed = str(job.params.get("custom_id") or job.custom_id)
        manual = _MANUAL_ANIMATE.match(pressed)
        if manual is not None:
            # Discord has no "Animate Manually" button: its form (MJ::AnimateModal) opens when
            # the animate press is sent with Remix on, which a remixed job does.
            pressed = f"MJ::JOB::animate_{manual['motion']}::{manual['n']}::{manual['hash']}::SOLO"
        theirs = parent.state.get("buttons")
        if not theirs:
            # Not remembered (a parent from before buttons were kept): ask the upstream.
            fetched = self._fetch_many(client, [parent.upstream_job_id]).get(parent.upstream_job_id)
            theirs = mapping.upstream_buttons((fetched or {}).get("buttons"))
        found = mapping.upstream_custom_id(
            pressed=pressed, ours=list(parent.buttons), theirs=list(theirs)
        )
        if not found:
            raise PermanentEngineError(
                "The upstream's copy of the parent task does not offer this button.",
                error_code=ErrorCode.INVALID_PARAMETER,
            )
        return found

    def _accepted(self, answer: Answer) -> mapping.Accepted:
        try:
            return mapping.submit_outcome(answer.data, http_status=answer.status)
        except mapping.QueueFull as exc:
            raise UpstreamUnavailable(
                f"The upstream's queue is full ({exc.description}); the task waits for a free "
                "account.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc

    def _refuse_unremixed(self, client: MjproxyClient, job: Job, job_id: str) -> None:
        """The upstream ran a remix press as a plain one (it ignores ``enableRemix``): stop
        that job and fail the task rather than deliver a picture of the old prompt."""
        try:
            client.post(f"/mj/task/{job_id}/cancel", {})
        except (TemporaryEngineError, PermanentEngineError, UpstreamOutcomeUnknown):
            logger.info("upstream cancel failed", extra={"task_id": job.task_id})
        raise PermanentEngineError(
            "The upstream midjourney-proxy does not support remix (it ignored enableRemix), "
            "so the changed prompt could not be sent.",
            error_code=ErrorCode.UNSUPPORTED_BY_UPSTREAM,
        )

    def _second_step(self, client: MjproxyClient, job: Job, accepted: mapping.Accepted) -> str:
        if not accepted.modal:
            return accepted.job_id
        try:
            return self._modal(client, job, accepted.job_id)
        except TemporaryEngineError as exc:
            # The first step's job is upstream (MODAL, waiting for its form): given back to the
            # queue, the task would send the first step again and leave this job behind. As an
            # unknown outcome it stays on this account, and the next start finds the job
            # (``find_job``, which sends only the form). The job is listed already: no settling.
            raise SubmitOutcomeUnknown(
                exc.message, error_code=exc.error_code, still_working=False
            ) from exc

    def _modal(self, client: MjproxyClient, job: Job, job_id: str) -> str:
        """Send the second step of a two-step action (vary region, custom zoom, remix …)."""
        body: dict[str, Any] = {"taskId": job_id, "prompt": job.prompt}
        if job.mask is not None and job.action != Action.REROLL:
            # Vary (Region)'s mask; an edit's reroll keeps its mask for engines that re-run
            # the edit, but a remixed reroll's form takes only the prompt.
            body["maskBase64"] = _data_url(job.mask)
        answer = client.post("/mj/submit/modal", body)
        if answer.status == 404 and not isinstance(answer.data, Mapping):
            # Older proxies have no modal step; their 21 meant "this job already exists".
            return job_id
        accepted = self._accepted(answer)
        return accepted.job_id or job_id

    @staticmethod
    def _recovered(account: AccountView) -> None:
        """The upstream took a job: its run of failures is over."""
        UpstreamAccount.objects.filter(pk=account.id, consecutive_failures__gt=0).update(
            consecutive_failures=0
        )

    # --- poll ----------------------------------------------------------------------------------

    def poll(self, job: Job) -> PollResult:
        try:
            upstream = self.upstream_task(job)
        except UpstreamOutcomeUnknown as exc:
            # For a status request this is just a failed round: ask again next time.
            raise TemporaryEngineError(exc.message, error_code=exc.error_code) from exc
        if upstream is None:
            return self._missing(job)
        view = mapping.upstream_view(upstream, action=job.action)
        if view.status == PollResult.RUNNING and job.state.get(MISSING_POLLS):
            # Listed again: whatever hid it was passing.
            return replace(view.poll_result(), state={MISSING_POLLS: 0, MISSING_SINCE: None})
        if view.status != PollResult.SUCCESS:
            return view.poll_result()
        if job.action == Action.VIDEO:
            return self._video_result(job, view)
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            image=self._result_image(job, view),
            is_grid=view.is_grid,
            properties=view.properties,
            # Kept with our task (never shown): follow-ups are translated through them.
            state={"buttons": view.buttons},
        )

    @staticmethod
    def _missing(job: Job) -> PollResult:
        """The upstream's answer does not list the job: wait a little, then give it up."""
        state = job.state
        missing = _int(state.get(MISSING_POLLS)) + 1
        now = timezone.now().timestamp()
        try:
            since = float(state.get(MISSING_SINCE) or now)
        except (TypeError, ValueError):
            since = now
        if missing >= MAX_MISSING_POLLS and now - since >= MISSING_GRACE_SECONDS:
            raise PermanentEngineError(
                "The upstream no longer knows this job (it stopped listing it), so it cannot "
                "finish.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return PollResult(
            status=PollResult.RUNNING,
            progress=job.progress,
            state={MISSING_POLLS: missing, MISSING_SINCE: since},
        )

    def upstream_task(self, job: Job) -> Mapping[str, Any] | None:
        """The upstream's JSON for ``job``: a finished state a callback reported, else this
        polling round's batch answer for the account."""
        job_id = job.upstream_job_id
        if not job_id:
            return None
        snapshot = cache.get(callback_cache_key(job.account.id, job_id))
        if snapshot:
            return dict(snapshot)
        return self._batch(job.account, job_id).get(job_id)

    def _batch(self, account: AccountView, job_id: str) -> dict[str, Any]:
        ttl = float(settings.MJPROXY_POLL_CACHE_SECONDS)
        key = batch_cache_key(account.id)

        def fresh() -> dict[str, Any] | None:
            entry = cache.get(key)
            if entry and job_id in entry["tasks"] and time.time() - entry["at"] <= ttl:
                tasks: dict[str, Any] = entry["tasks"]
                return tasks
            return None

        if ttl <= 0:
            return self._fetch_in_flight(account, job_id)
        cached = fresh()
        if cached is not None:
            return cached
        lock = f"{key}:lock"
        holder = cache.add(lock, 1, timeout=math.ceil(float(settings.MJPROXY_HTTP_TIMEOUT)) + 5)
        if not holder:
            # Another poll step is asking the upstream for this account right now: its answer
            # covers us too, so wait for it briefly rather than sending a second request.
            deadline = time.monotonic() + min(ttl, 2.0)
            while time.monotonic() < deadline:
                time.sleep(0.05)
                cached = fresh()
                if cached is not None:
                    return cached
        try:
            tasks = self._fetch_in_flight(account, job_id)
            cache.set(key, {"at": time.time(), "tasks": tasks}, timeout=max(1, math.ceil(ttl)))
        finally:
            if holder:
                cache.delete(lock)
        return tasks

    def _fetch_in_flight(self, account: AccountView, job_id: str) -> dict[str, Any]:
        """Every in-flight job of the account, in as few requests as the batch size allows."""
        others = [other for other in account.running_jobs() if other and other != job_id]
        ids = list(dict.fromkeys([job_id, *others]))
        return self._fetch_many(client_for(account), ids)

    def _fetch_many(self, client: MjproxyClient, ids: list[str]) -> dict[str, Any]:
        """``{upstream id: task JSON or None}`` for every id asked (None: the upstream has none)."""
        size = max(1, int(settings.MJPROXY_POLL_BATCH_SIZE))
        found: dict[str, Any] = {}
        for chunk in _chunks(ids, size):
            answer = client.post("/mj/task/list-by-condition", {"ids": chunk})
            if answer.status in (404, 405):
                # No batch endpoint on this upstream: one request per task, ours only.
                return {ids[0]: self._fetch_one(client, ids[0])}
            if answer.status != 200:
                raise UpstreamUnavailable(
                    f"The upstream's task list answered HTTP {answer.status}.",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                )
            listed = {str(item.get("id")): dict(item) for item in _task_list(answer.data)}
            for upstream_id in chunk:
                found[upstream_id] = listed.get(upstream_id)
        return found

    def _fetch_one(self, client: MjproxyClient, job_id: str) -> dict[str, Any] | None:
        answer = client.get(f"/mj/task/{job_id}/fetch")
        if answer.status == 404:
            return None
        if answer.status != 200 or not isinstance(answer.data, Mapping):
            raise UpstreamUnavailable(
                f"The upstream's task fetch answered HTTP {answer.status}.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return dict(answer.data)

    def _video_result(self, job: Job, view: mapping.UpstreamView) -> PollResult:
        """A finished video: its clips downloaded, and a poster (the upstream's image, else
        the first frame of the first clip).

        Only the first clips up to the batch the job asked for are fetched (each may be up to
        ``MJPROXY_MAX_IMAGE_BYTES``, held in memory until stored): a longer list is the
        upstream's mistake, not more clips for the customer. A shorter one is kept as it is,
        the video then has the clips that came (none at all fails the task).
        """
        urls = view.video_urls[: _video_batch(job.params)]
        if not urls:
            raise PermanentEngineError(
                "The upstream reported the video finished but sent no clip.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        clips = [self._download(job.account, url) for url in urls]
        if view.image_url:
            poster = self._download(job.account, view.image_url)
        else:
            try:
                poster = first_frame(clips[0])
            except ValueError as exc:
                raise PermanentEngineError(
                    "The upstream's video clip could not be read.",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                ) from exc
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            image=ResultImage(data=poster),
            videos=tuple(ResultVideo(data=clip) for clip in clips),
            is_grid=False,
            properties=view.properties,
            state={"buttons": view.buttons},
        )

    def _result_image(self, job: Job, view: mapping.UpstreamView) -> ResultImage | None:
        if job.action == Action.SHORTEN:
            return None
        if job.action == Action.DESCRIBE and job.images:
            # The described image is the customer's own input; we already have it.
            return ResultImage(data=job.images[0].read())
        if not view.image_url:
            raise PermanentEngineError(
                "The upstream reported success but sent no image.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        return ResultImage(data=self._download(job.account, view.image_url))

    def _download(self, account: AccountView, url: str) -> bytes:
        """Fetch a result image into memory, for the lifecycle to store as ours.

        Which addresses may be fetched: an image served by the account's own upstream — the
        same scheme, host and port as its ``base_url`` — is trusted exactly as far as the
        ``base_url`` is (operator input, so private and loopback addresses are allowed; a
        relative ``imageUrl`` counts as the upstream's own). Any other host, typically a CDN,
        is an address the upstream chose, and goes through the full SSRF guard like a
        customer URL (``WEBHOOKS_ALLOW_PRIVATE_ADDRESSES`` applies). Size and time are capped
        either way, and redirects are not followed.
        """
        base_url = str(account.options.get("base_url") or "").rstrip("/")
        if url.startswith("/"):
            url = f"{base_url}{url}"
        own = origin_of(url) == origin_of(base_url)
        timeout = float(settings.MJPROXY_HTTP_TIMEOUT)
        try:
            return safe_download(
                url,
                max_bytes=int(settings.MJPROXY_MAX_IMAGE_BYTES),
                timeout=Timeout(
                    connect=min(float(settings.MJPROXY_CONNECT_TIMEOUT), timeout),
                    read=timeout,
                    total=timeout * 2,
                ),
                # A tenant's own account: its base_url is customer input, never trusted.
                allow_private=True if own and account.operator_managed else None,
            )
        except (UnsafeURL, ResponseTooLarge) as exc:
            raise PermanentEngineError(
                f"The upstream's result image could not be fetched: {exc.message}",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc
        except OutboundHTTPError as exc:
            if exc.permanent:
                raise PermanentEngineError(
                    f"The upstream's result image could not be fetched: {exc.message}",
                    error_code=ErrorCode.UPSTREAM_ERROR,
                ) from exc
            raise TemporaryEngineError(
                "The upstream's result image could not be downloaded yet.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            ) from exc

    # --- seed ----------------------------------------------------------------------------------

    def image_seed(self, job: Job) -> int | None:
        """``GET /mj/task/{id}/image-seed``: ``{"code": 1, "result": "<seed>"}`` when known."""
        if not job.upstream_job_id:
            return None
        try:
            answer = client_for(job.account).get(f"/mj/task/{job.upstream_job_id}/image-seed")
        except UpstreamOutcomeUnknown as exc:
            # Asking changes nothing upstream: an unanswered question is simply open.
            raise TemporaryEngineError(exc.message, error_code=exc.error_code) from exc
        data = answer.data if isinstance(answer.data, Mapping) else {}
        if answer.status == 404 or (answer.status == 200 and _int(data.get("code")) != 1):
            return None  # the upstream has no such job, or no seed for it
        if answer.status != 200:
            raise TemporaryEngineError(
                f"The upstream's image-seed answered HTTP {answer.status}.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        # Anything but 0 … 2**32-1 in ASCII digits ("²" is a digit to ``str.isdigit``, 25 of
        # them overflow the task's column) is a seed we cannot use: unknown.
        seed = str(data.get("result") or "").strip()
        if not _SEED_RE.fullmatch(seed) or int(seed) >= 2**32:
            return None
        return int(seed)

    # --- cancel --------------------------------------------------------------------------------

    def cancel(self, job: Job) -> None:
        if not job.upstream_job_id:
            return
        try:
            client_for(job.account).post(f"/mj/task/{job.upstream_job_id}/cancel", {})
        except (TemporaryEngineError, PermanentEngineError, UpstreamOutcomeUnknown):
            logger.info("upstream cancel failed", extra={"task_id": job.task_id})

    # --- callbacks ---------------------------------------------------------------------------
    #
    # A midjourney-proxy calls ``notifyHook`` with the task JSON on every change of a job. The
    # hook URL carries the account id and a random per-account token (stored encrypted with the
    # account's secrets, compared in constant time): the upstream cannot send headers of our
    # choosing, so the URL is the credential. A callback is a hint, never the authority on
    # money: the lifecycle applies it with the same compare-and-set transitions as a poll, so a
    # duplicate, late or replayed callback cannot move a finished task.

    def callback_authentic(self, account: AccountView, token: str) -> bool:
        expected = str(account.secrets.get("callback_token") or "")
        # Compare even when there is nothing to compare with, so timing tells nothing either.
        matches = hmac.compare_digest(
            (expected or secrets.token_urlsafe(32)).encode(), str(token or "").encode()
        )
        return bool(expected) and matches

    def parse_callback(self, account: AccountView, payload: Mapping[str, Any]) -> list[JobUpdate]:
        job_id = str(payload.get("id") or "").strip()
        if not job_id:
            return []
        # Our task's action only shapes a finished result, which the poll step maps itself.
        view = mapping.upstream_view(payload, action="")
        if view.status == PollResult.SUCCESS:
            # Downloading and storing the images is a worker's job, not a web request's: the
            # finished JSON is left where ``upstream_task`` looks first, for the poll step the
            # lifecycle runs now.
            cache.set(
                callback_cache_key(account.id, job_id), dict(payload), CALLBACK_SNAPSHOT_SECONDS
            )
        return [JobUpdate(account_id=account.id, upstream_job_id=job_id, result=view.poll_result())]


register(MjproxyEngine())
