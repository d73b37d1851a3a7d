"""A local fake midjourney-proxy server for tests (no internet, loopback only).

It speaks the upstream side of the mj-proxy dialect well enough to drive the mjproxy engine
through every path: submit endpoints with scripted answer codes (1/22/21/23/24/4), two-step
actions (21 → ``/mj/submit/modal``), ``list-by-condition`` / ``fetch`` / ``list`` / ``cancel``,
jobs that progress over time or only when the test says so, failures, callbacks to a
``notifyHook``, and result images served from its own ``/images/…`` URLs. Every request is
recorded so tests can assert exactly what the upstream received.

    fake = FakeMjproxy(secret="s3cret", duration=None)   # jobs wait for fake.finish(...)
    fake.start()
    ... fake.base_url ...
    fake.stop()
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from apps.engines.sandbox.video import render_clip
from apps.tasks.buttons import Button, buttons_for
from apps.tasks.enums import Action

SUBMIT_PATHS = {
    "/mj/submit/imagine": "IMAGINE",
    "/mj/submit/action": "ACTION",
    "/mj/submit/describe": "DESCRIBE",
    "/mj/submit/blend": "BLEND",
    "/mj/submit/shorten": "SHORTEN",
    "/mj/insight-face/swap": "SWAP_FACE",
    "/mj/submit/edits": "EDITS",
    "/mj/submit/retexture": "RETEXTURE",
    # trueai-org's Plus route; ``supports_video=False`` plays novicezk's proxy (404).
    "/mj/submit/video": "VIDEO",
}
#: trueai-org's ``videoType`` values: SD and HD.
VIDEO_TYPES = ("vid_1.1_i2v_480", "vid_1.1_i2v_720")
#: Routes only the Plus proxies have (``supports_edits = False`` answers them 404).
PLUS_PATHS = ("/mj/submit/edits", "/mj/submit/retexture")
MODAL_CUSTOM_IDS = (
    "MJ::Inpaint::",
    "MJ::CustomZoom::",
    "MJ::Job::PicReader::",
    "MJ::Job::PromptAnalyzer::",
)
#: Buttons a Plus proxy opens the remix form for when the action asks ``enableRemix``.
REMIX_CUSTOM_IDS = (
    "MJ::JOB::variation::",
    "MJ::JOB::low_variation::",
    "MJ::JOB::high_variation::",
    "MJ::JOB::reroll::",
    "MJ::JOB::pan_",
    # Animate and extend: with Remix on Midjourney opens its MJ::AnimateModal form.
    "MJ::JOB::animate_",
)
NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")
RUNNING = ("NOT_START", "SUBMITTED", "IN_PROGRESS")


def seed_of(job_id: str) -> int:
    """The seed the fake reports for a finished job (``GET /mj/task/{id}/image-seed``)."""
    return int.from_bytes(hashlib.sha256(f"seed:{job_id}".encode()).digest()[:4], "big")


def _wire(button: Button, custom_id: str | None = None) -> dict[str, Any]:
    """A button as midjourney-proxy's task JSON spells it (``customId`` first)."""
    return {
        "customId": button.custom_id if custom_id is None else custom_id,
        "emoji": button.emoji,
        "label": button.label,
        "type": button.type,
        "style": button.style,
    }


def _png(seed: str, *, grid: bool) -> bytes:
    """A small deterministic PNG: four coloured quadrants for grids, one colour otherwise."""
    digest = hashlib.sha256(seed.encode()).digest()
    side = 128 if grid else 96
    image = Image.new("RGB", (side, side), tuple(digest[0:3]))
    if grid:
        half = side // 2
        for index, (x, y) in enumerate(((0, 0), (half, 0), (0, half), (half, half))):
            color = tuple(digest[3 + 3 * index : 6 + 3 * index])
            image.paste(Image.new("RGB", (half, half), color), (x, y))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _mp4(seed: str) -> bytes:
    """A real short H.264 clip, as a Plus upstream serves its videos."""
    return render_clip(_png(seed, grid=False), motion="low", seed=len(seed)).data


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeJob:
    id: str
    action: str
    prompt: str
    state: str | None
    notify_hook: str
    status: str = "SUBMITTED"
    progress: int = 0
    submit_time: int = 0
    start_time: int | None = None
    finish_time: int | None = None
    fail_reason: str = ""
    custom_id: str = ""
    parent_id: str = ""
    mask: str = ""
    images_in: int = 0
    grid: bool = True
    started: float = 0.0
    job_hash: str = ""
    final_prompt: str = ""
    will_fail: str = ""
    image: bytes | None = None
    buttons: list[dict[str, Any]] = field(default_factory=list)
    #: The editor's composed picture (EDITS/RETEXTURE ``image``), as sent.
    edit_image: str = ""
    video_type: str = ""
    end_image: str = ""
    batch_size: int = 0
    video: bytes | None = None
    #: A video's ``imageUrl`` (its poster); some Plus upstreams send none.
    poster: bool = True

    def as_json(self, base_url: str, image_base: str | None = None) -> dict[str, Any]:
        done = self.status == "SUCCESS"
        has_image = done and self.action != "SHORTEN" and (self.action != "VIDEO" or self.poster)
        return {
            "id": self.id,
            "action": self.action,
            "status": self.status,
            "prompt": self.prompt,
            "promptEn": self.prompt,
            "description": f"/{self.action.lower()} {self.prompt}".strip(),
            "state": self.state,
            "submitTime": self.submit_time,
            "startTime": self.start_time,
            "finishTime": self.finish_time,
            "imageUrl": (
                f"{base_url if image_base is None else image_base}/images/{self.id}.png"
                if has_image
                else None
            ),
            "progress": f"{self.progress}%" if self.status != "FAILURE" else "",
            "failReason": self.fail_reason or None,
            "videoUrls": (
                [
                    {
                        "url": f"{base_url if image_base is None else image_base}/videos/{self.id}-{n}.mp4"
                    }
                    for n in range(1, self.batch_size + 1)
                ]
                if done and self.action == "VIDEO"
                else None
            ),
            "buttons": self.buttons if done else [],
            "properties": {
                "finalPrompt": self.final_prompt or self.prompt,
                "discordInstanceId": "fake-instance-1",
                "messageId": f"msg-{self.id}",
            },
        }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a read timeout under test) is expected, not news


class FakeMjproxy:
    """See the module docstring. Attributes may be changed by a test at any time."""

    def __init__(
        self,
        *,
        secret: str | None = "upstream-secret",  # noqa: S107  (a fake's fixed test value)
        duration: float | None = None,
        submit_delay: float = 0.0,
        callbacks: bool = True,
        supports_list: bool = True,
        supports_batch: bool = True,
        supports_video: bool = True,
    ) -> None:
        self.secret = secret
        #: Seconds from submit to the end of a job; None: jobs move only when the test says.
        self.duration = duration
        self.submit_delay = submit_delay
        self.callbacks = callbacks
        self.supports_list = supports_list
        self.supports_batch = supports_batch
        #: ``enableRemix`` on an action opens the remix form (21); False: ignored, as an
        #: open-source proxy does.
        self.supports_remix = True
        #: The editor routes exist (a Plus proxy); False: they answer 404.
        self.supports_edits = True
        self.supports_video = supports_video
        #: Video jobs report a poster ``imageUrl`` (False: only ``videoUrls``).
        self.video_posters = True
        #: Answers for the next submits, in order: (code, description).
        self.scripted: list[tuple[int, str]] = []
        #: Answers for the next modal steps (``/mj/submit/modal``) only, before ``scripted``.
        self.scripted_modal: list[tuple[int, str]] = []
        #: Prompts containing one of these are refused with code 24.
        self.banned_words: set[str] = set()
        #: Prompts containing a key end in FAILURE with the value as failReason.
        self.fail_prompts: dict[str, str] = {}
        #: Where result images are said to be: None = this server; "" = relative URLs.
        self.image_base: str | None = None
        #: HTTP status answered to every request instead of the normal answer (e.g. 503).
        self.http_status: int | None = None
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[Recorded] = []
        self.served_images: dict[str, bytes] = {}
        self.callback_log: list[tuple[str, str, Any]] = []
        self.max_running = 0
        self._counter = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._callbacks: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeMjproxy:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self._stopping.clear()
        server = self._server
        for target in (
            lambda: server.serve_forever(poll_interval=0.02),
            self._tick_forever,
            self._send_callbacks,
        ):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._callbacks.put(None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what the test asks ------------------------------------------------------------------

    def submits(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path in SUBMIT_PATHS and (path is None or r.path == path)
            ]

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def submits_per_prompt(self) -> Counter[str]:
        return Counter(str(r.body.get("prompt")) for r in self.submits("/mj/submit/imagine"))

    def submits_per_state(self) -> Counter[str]:
        return Counter(str(r.body.get("state")) for r in self.submits())

    def job_for_state(self, state: str) -> FakeJob:
        with self._lock:
            return next(job for job in self.jobs.values() if job.state == state)

    def task_json(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return self.jobs[job_id].as_json(self.base_url, self.image_base)

    # --- driving jobs by hand ----------------------------------------------------------------

    def set_progress(self, job_id: str, progress: int) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.status, job.progress = "IN_PROGRESS", progress
            job.start_time = job.start_time or self._ms()
            self._changed(job)

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._succeed(self.jobs[job_id])

    def fail(self, job_id: str, reason: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.status, job.fail_reason, job.progress = "FAILURE", reason, 0
            job.finish_time = self._ms()
            self._changed(job)

    # --- internals ---------------------------------------------------------------------------

    @staticmethod
    def _ms() -> int:
        return int(time.time() * 1000)

    def _new_id(self) -> str:
        self._counter += 1
        return f"{int(time.time() * 1000)}{self._counter:04d}"

    def _running(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status in ("SUBMITTED", "IN_PROGRESS"))

    def _changed(self, job: FakeJob) -> None:
        self.max_running = max(self.max_running, self._running())
        if self.callbacks and job.notify_hook:
            self._callbacks.put((job.notify_hook, job.as_json(self.base_url, self.image_base)))

    def _succeed(self, job: FakeJob) -> None:
        if job.action == "SHORTEN":
            job.final_prompt = "Analysis: the words that matter.\n\n" + "\n\n".join(
                f"{NUMBERS[i]} {job.prompt} short {i + 1}" for i in range(5)
            )
            job.buttons = [
                _wire(b) for b in buttons_for(Action.SHORTEN, job_hash="x", is_grid=False)
            ]
        elif job.action == "DESCRIBE":
            job.final_prompt = "\n\n".join(
                f"{NUMBERS[i]} described scene {i + 1}" for i in range(4)
            )
            job.buttons = [
                _wire(b) for b in buttons_for(Action.DESCRIBE, job_hash="x", is_grid=False)
            ]
        elif job.action == "VIDEO":
            job.grid = False
            job.batch_size = job.batch_size or 4
            job.video = _mp4(job.id)
            job.buttons = [
                _wire(b) for b in buttons_for(Action.VIDEO, job_hash=job.job_hash, is_grid=False)
            ][: 2 * job.batch_size]
        else:
            job.buttons = [
                _wire(b, b.custom_id.replace("upsample_v6_", "upsample_v6r1_"))
                for b in buttons_for(Action.IMAGINE, job_hash=job.job_hash, is_grid=job.grid)
            ]
        if job.action != "SHORTEN":
            job.image = _png(job.id, grid=job.grid)
        job.status, job.progress = "SUCCESS", 100
        job.finish_time = self._ms()
        self._changed(job)

    def _tick_forever(self) -> None:
        while not self._stopping.wait(0.02):
            if self.duration is None:
                continue
            with self._lock:
                for job in list(self.jobs.values()):
                    if job.status not in ("SUBMITTED", "IN_PROGRESS"):
                        continue
                    elapsed = time.monotonic() - job.started
                    if elapsed >= self.duration:
                        if job.will_fail:
                            job.status, job.fail_reason, job.progress = "FAILURE", job.will_fail, 0
                            job.finish_time = self._ms()
                            self._changed(job)
                        else:
                            self._succeed(job)
                        continue
                    progress = int(elapsed / self.duration * 10) * 10 if self.duration else 0
                    if job.status == "SUBMITTED" or progress > job.progress:
                        job.status, job.progress = "IN_PROGRESS", min(progress, 99)
                        job.start_time = job.start_time or self._ms()
                        self._changed(job)

    def _send_callbacks(self) -> None:
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            url, body = item
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.callback_log.append((url, str(response.status), body))
            except Exception as exc:  # the real proxies log and move on
                self.callback_log.append((url, f"error: {exc}", body))

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = handler.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(Recorded(method, path, body, headers))
        if path.startswith("/videos/"):
            job_id = path.rsplit("/", 1)[-1].split("-", 1)[0]
            with self._lock:
                job = self.jobs.get(job_id)
                video = job.video if job else None
            if video is None:
                self._reply(handler, 404, {"error": "no video"})
            else:
                self._reply_bytes(handler, 200, video, "video/mp4")
            return
        if path.startswith("/images/"):
            job_id = path.rsplit("/", 1)[-1].removesuffix(".png")
            with self._lock:
                job = self.jobs.get(job_id)
                data = job.image if job else None
                if data is not None:
                    self.served_images[job_id] = data
            if data is None:
                self._reply(handler, 404, {"error": "no image"})
            else:
                self._reply_bytes(handler, 200, data, "image/png")
            return
        if self.http_status is not None:
            self._reply(handler, self.http_status, {"error": "scripted"})
            return
        if self.secret is not None and headers.get("mj-api-secret") != self.secret:
            self._reply(handler, 401, {"code": 4, "description": "bad secret"})
            return
        if (path in PLUS_PATHS and not self.supports_edits) or (
            path == "/mj/submit/video" and not self.supports_video
        ):
            self._reply(handler, 404, None)
            return
        if path in SUBMIT_PATHS and method == "POST":
            if self.submit_delay:
                time.sleep(self.submit_delay)
            self._reply(handler, 200, self._submit(path, body or {}))
            return
        if path == "/mj/submit/modal" and method == "POST":
            self._reply(handler, 200, self._modal(body or {}))
            return
        if path == "/mj/task/list-by-condition" and method == "POST":
            if not self.supports_batch:
                self._reply(handler, 404, None)
                return
            ids = list((body or {}).get("ids") or [])
            with self._lock:
                found = [
                    self.jobs[i].as_json(self.base_url, self.image_base)
                    for i in ids
                    if i in self.jobs
                ]
            self._reply(handler, 200, found)
            return
        if path == "/mj/task/list" and method == "GET":
            if not self.supports_list:
                self._reply(handler, 404, None)
                return
            with self._lock:
                listed = [job.as_json(self.base_url, self.image_base) for job in self.jobs.values()]
            self._reply(handler, 200, listed)
            return
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["mj", "task"]:
            with self._lock:
                job = self.jobs.get(parts[2])
                if parts[3] == "fetch" and method == "GET":
                    if job is None:
                        self._reply(handler, 404, None)
                    else:
                        self._reply(handler, 200, job.as_json(self.base_url, self.image_base))
                    return
                if parts[3] == "image-seed" and method == "GET":
                    if job is None:
                        self._reply(handler, 404, None)
                    elif job.status != "SUCCESS":
                        self._reply(handler, 200, self._answer(4, "task not finished"))
                    else:
                        self._reply(handler, 200, self._answer(1, "success", str(seed_of(job.id))))
                    return
                if parts[3] == "cancel" and method == "POST":
                    if job is not None and job.status in RUNNING:
                        job.status, job.fail_reason = "CANCEL", "cancelled"
                    self._reply(handler, 200, {"code": 1, "description": "ok"})
                    return
        self._reply(handler, 404, None)

    def _answer(
        self, code: int, description: str, result: Any = None, **properties: Any
    ) -> dict[str, Any]:
        return {
            "code": code,
            "description": description,
            "result": result,
            "properties": properties,
        }

    def _submit(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.scripted:
                code, description = self.scripted.pop(0)
                if code not in (1, 21, 22):
                    return self._answer(code, description)
            kind = SUBMIT_PATHS[path]
            prompt = str(body.get("prompt") or "")
            for word in self.banned_words:
                if word in prompt.lower():
                    return self._answer(24, "banned prompt", None, promptEn=prompt, bannedWord=word)
            job = FakeJob(
                id=self._new_id(),
                action=kind,
                prompt=prompt,
                state=body.get("state"),
                notify_hook=str(body.get("notifyHook") or ""),
                submit_time=self._ms(),
                started=time.monotonic(),
                job_hash=hashlib.md5(str(self._counter).encode()).hexdigest(),  # noqa: S324
            )
            if kind == "ACTION":
                parent = self.jobs.get(str(body.get("taskId")))
                if parent is None:
                    return self._answer(3, "task not found")
                custom_id = str(body.get("customId") or "")
                if custom_id not in {b["customId"] for b in parent.buttons}:
                    return self._answer(4, "unknown customId")
                job.custom_id, job.parent_id, job.prompt = custom_id, parent.id, parent.prompt
                job.action = self._action_name(custom_id)
                job.grid = "upsample::" not in custom_id
                remix = (
                    self.supports_remix
                    and body.get("enableRemix") is True
                    and custom_id.startswith(REMIX_CUSTOM_IDS)
                )
                if custom_id.startswith(MODAL_CUSTOM_IDS) or remix:
                    job.status = "MODAL"
                    self.jobs[job.id] = job
                    return self._answer(21, "waiting for window confirm", job.id)
            elif kind in ("DESCRIBE", "SHORTEN", "SWAP_FACE"):
                job.grid = False
                job.images_in = 1 if kind == "DESCRIBE" else (2 if kind == "SWAP_FACE" else 0)
            elif kind in ("IMAGINE", "BLEND"):
                job.images_in = len(body.get("base64Array") or [])
            elif kind in ("EDITS", "RETEXTURE"):
                # trueai-org's SubmitEditsDTO: ``prompt`` and one ``image`` (url or data URL),
                # both required (SubmitController.Edits/Retexture answer VALIDATION_ERROR, 4).
                image = str(body.get("image") or "").strip()
                if not image or not prompt.strip():
                    return self._answer(4, "image或prompt不能为空")
                if not image.startswith(("http", "data:")):
                    image = "data:image/png;base64," + image
                job.images_in, job.edit_image = 1, image
            elif kind == "VIDEO":
                # trueai-org's SubmitVideoDTO: ``image`` (the start frame, not needed to
                # extend), ``endImage``, ``videoType``, ``index`` 0-3, ``batchSize`` 1|2|4.
                video_type = str(body.get("videoType") or "vid_1.1_i2v_480")
                if video_type not in VIDEO_TYPES:
                    return self._answer(4, f"unknown videoType {video_type}")
                job.grid, job.batch_size = False, int(body.get("batchSize") or 4)
                job.poster = self.video_posters
                job.video_type, job.end_image = video_type, str(body.get("endImage") or "")
                if body.get("action") == "extend":
                    parent = self.jobs.get(str(body.get("taskId")))
                    if parent is None or parent.action != "VIDEO":
                        return self._answer(3, "video task not found")
                    if body.get("index") not in range(parent.batch_size or 4):
                        return self._answer(4, "index must be 0-3, a video of the task")
                    job.parent_id = parent.id
                elif not body.get("image"):
                    return self._answer(4, "image is required")
                else:
                    job.images_in = 1
            for needle, reason in self.fail_prompts.items():
                if needle in job.prompt:
                    job.will_fail = reason
            self.jobs[job.id] = job
            self._changed(job)
            queued = self._running() > 3
            return self._answer(
                22 if queued else 1, "In queue" if queued else "Submit success", job.id
            )

    @staticmethod
    def _action_name(custom_id: str) -> str:
        for needle, name in (
            ("animate_", "VIDEO"),
            ("upsample", "UPSCALE"),
            ("variation", "VARIATION"),
            ("reroll", "REROLL"),
            ("Inpaint", "INPAINT"),
            ("Outpaint", "OUTPAINT"),
            ("CustomZoom", "OUTPAINT"),
            ("pan_", "PAN"),
            ("PicReader", "IMAGINE"),
            ("Picread", "DESCRIBE"),
            ("PromptAnalyzer", "IMAGINE"),
        ):
            if needle in custom_id:
                return name
        return "ACTION"

    def _modal(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(str(body.get("taskId")))
            if job is None:
                return self._answer(3, "task not found")
            if job.status != "MODAL":
                return self._answer(4, "task is not waiting for a modal")
            if self.scripted_modal:
                code, description = self.scripted_modal.pop(0)
                if code not in (1, 22):
                    return self._answer(code, description)
            elif self.scripted:
                code, description = self.scripted.pop(0)
                if code not in (1, 22):
                    return self._answer(code, description)
            job.prompt = str(body.get("prompt") or job.prompt)
            job.mask = str(body.get("maskBase64") or "")
            job.status, job.started = "SUBMITTED", time.monotonic()
            self._changed(job)
            return self._answer(1, "Submit success", job.id)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        FakeMjproxy._reply_bytes(handler, status, data, "application/json")

    @staticmethod
    def _reply_bytes(
        handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
