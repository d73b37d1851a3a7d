"""The built-in sandbox engine (SPEC §5): real, deterministic images, no upstream needed.

A job takes ``duration`` seconds (account option, default 6) and reports progress in between.
``fail_rate`` (0–1) makes that share of jobs fail — chosen deterministically from the task id so
a rerun behaves the same — and ``stall`` makes jobs never finish, to exercise run timeouts.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.db import (
    RELAXED_COMMIT,
    RELAXED_COMMIT_CONDITION,
    prepared_cursor,
    relaxed_commit_wanted,
)
from apps.engines.base import (
    Engine,
    Job,
    PermanentEngineError,
    PollResult,
    ResultImage,
    SubmitResult,
    TemporaryEngineError,
    register,
)
from apps.engines.models import SandboxJob
from apps.tasks import prompt as prompts
from apps.tasks.enums import Action, ErrorCode
from apps.tasks.remix import is_remixed

from . import render
from .editor import render_edit, render_retexture
from .references import apply_references
from .remix import render_remix
from .video import video_result

DEFAULT_DURATION = 6.0
STALL_PROGRESS = 42


def _option_float(options: Mapping[str, Any], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except (TypeError, ValueError):
        return default


def _option_bool(options: Mapping[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


#: The steps Midjourney reports a job's progress in (its bot edits the message at these).
PROGRESS_STEPS = (0, 8, 15, 23, 31, 39, 46, 54, 62, 70, 78, 85, 93, 96)


def progress_at(elapsed: float, duration: float) -> int:
    """Progress ``elapsed`` seconds into a job of ``duration`` seconds, in Midjourney's steps:
    fourteen of them, so a client polling a few times during a job sees it move (never 100
    before the result is there)."""
    if duration <= 0:
        return PROGRESS_STEPS[-1]
    share = max(0.0, min(elapsed / duration, 1.0))
    return PROGRESS_STEPS[min(int(share * len(PROGRESS_STEPS)), len(PROGRESS_STEPS) - 1)]


def _fraction(task_id: str) -> float:
    digest = hashlib.sha256(f"sandbox-fail:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SandboxEngine(Engine):
    name = "sandbox"
    idempotent_submit = True
    # The sandbox renders follow-ups from our stored parent images, so any sandbox account can.
    follow_ups_need_parent_account = False

    def validate_options(self, options: dict[str, Any], secrets: dict[str, Any]) -> None:
        for key in options:
            if key not in {"duration", "fail_rate", "stall"}:
                raise ValueError(
                    f"Unknown sandbox option '{key}' (use duration, fail_rate, stall)."
                )
        duration = _option_float(options, "duration", DEFAULT_DURATION)
        if not 0 <= duration <= 3600:
            raise ValueError("duration must be between 0 and 3600 seconds.")
        fail_rate = _option_float(options, "fail_rate", 0)
        if not 0 <= fail_rate <= 1:
            raise ValueError("fail_rate must be between 0 and 1.")

    def submit(self, job: Job) -> SubmitResult:
        options = job.account.options
        record = SandboxJob(
            job_id=secrets.token_hex(16),
            task_id=job.task_id,
            account_id=job.account.id,
            duration=_option_float(options, "duration", DEFAULT_DURATION),
            will_fail=_fraction(job.task_id) < _option_float(options, "fail_rate", 0),
            stall=_option_bool(options, "stall"),
            created_at=timezone.now(),
        )
        created = record
        if not _insert_live(record):
            # This account runs a live job for the task already (an earlier submit): that one.
            live = SandboxJob.objects.filter(
                task_id=job.task_id, account_id=job.account.id, cancelled=False
            )
            live.update(submit_calls=F("submit_calls") + 1)
            found = live.first()
            if found is None:  # stopped between our insert and this read: ask again later
                raise TemporaryEngineError("The sandbox job changed while it was submitted.")
            created = found
        if created.stall:
            return SubmitResult(upstream_job_id=created.job_id)
        left = created.duration - (timezone.now() - created.created_at).total_seconds()
        return SubmitResult(upstream_job_id=created.job_id, eta_seconds=max(0.0, left))

    def find_job(self, job: Job) -> SubmitResult | None:
        job_id = (
            SandboxJob.objects.filter(
                task_id=job.task_id, account_id=job.account.id, cancelled=False
            )
            .values_list("job_id", flat=True)
            .first()
        )
        return SubmitResult(upstream_job_id=job_id) if job_id else None

    def cancel(self, job: Job) -> None:
        # The job the task names; only one recorded nowhere yet is found by task and account.
        if job.upstream_job_id:
            SandboxJob.objects.filter(job_id=job.upstream_job_id).update(cancelled=True)
        else:
            SandboxJob.objects.filter(task_id=job.task_id, account_id=job.account.id).update(
                cancelled=True
            )

    def poll(self, job: Job) -> PollResult:
        status = self.poll_status(job)
        if status.result_pending:
            return render_result(job)
        return status

    def poll_status(self, job: Job) -> PollResult:
        """Where the job is, without rendering: a finished one is SUCCESS with
        ``result_pending`` (the render, the slow part, is ``poll``'s). A running one says
        how long it has left, so the next poll comes when it is done."""
        record = _job_record(job.upstream_job_id)
        if record is None:
            raise PermanentEngineError(
                "The sandbox has no record of this job.", error_code=ErrorCode.UPSTREAM_ERROR
            )
        if record.cancelled:
            return PollResult(
                status=PollResult.FAILURE,
                fail_reason="The sandbox job was cancelled.",
                error_code=ErrorCode.UPSTREAM_ERROR,
            )
        elapsed = (timezone.now() - record.created_at).total_seconds()
        if record.stall:
            return PollResult(status=PollResult.RUNNING, progress=STALL_PROGRESS)
        if elapsed < record.duration:
            return PollResult(
                status=PollResult.RUNNING,
                progress=progress_at(elapsed, record.duration),
                eta_seconds=record.duration - elapsed,
            )
        if record.will_fail:
            return PollResult(
                status=PollResult.FAILURE,
                fail_reason="The sandbox failed this job as configured (fail_rate).",
                error_code=ErrorCode.UPSTREAM_REJECTED,
            )
        return PollResult(status=PollResult.SUCCESS, progress=100, result_pending=True)


_INSERT_SQL: list[str] = []


def _insert_live(record: SandboxJob) -> bool:
    """Insert ``record``; False when the account has a live job for the task already (the
    one-live-job constraint). On PostgreSQL one fixed statement (``ON CONFLICT DO NOTHING`` on
    that constraint's partial index, no savepoint); elsewhere the ORM's insert (any other
    integrity error, as before, is taken for that one too)."""
    if connection.vendor != "postgresql":
        try:
            with transaction.atomic():
                record.save(force_insert=True)
        except IntegrityError:
            return False
        return True
    fields = SandboxJob._meta.concrete_fields
    if not _INSERT_SQL:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(f.column)) for f in fields)
        table = quote(SandboxJob._meta.db_table)
        values = ", ".join(["%s"] * len(fields))
        conflict = "ON CONFLICT (account_id, task_id) WHERE NOT cancelled DO NOTHING"
        _INSERT_SQL.append(f"INSERT INTO {table} ({columns}) VALUES ({values}) {conflict}")  # noqa: S608
        # The sandbox is an upstream of its own: on its own (no transaction of ours around
        # it) its record's commit does not wait for the disk, as ours do not wait for a real
        # upstream's (apps/core/db.py, "relaxed commits").
        _INSERT_SQL.append(
            f"{RELAXED_COMMIT}INSERT INTO {table} ({columns}) SELECT {values} "
            f"WHERE {RELAXED_COMMIT_CONDITION} {conflict}"
        )
    relaxed = relaxed_commit_wanted(outermost=not connection.in_atomic_block)
    with prepared_cursor() as cursor:
        cursor.execute(
            _INSERT_SQL[1 if relaxed else 0],
            [f.get_db_prep_save(f.pre_save(record, True), connection) for f in fields],
        )
        inserted = cursor.rowcount > 0
    if inserted:
        record._state.adding = False
    return inserted


_RECORD_SQL: list[str] = []


def _job_record(job_id: str) -> SandboxJob | None:
    """The sandbox's record of a job (each poll reads it): on PostgreSQL by a fixed statement
    built once from the model, since building it in the ORM cost more than running it."""
    if connection.vendor != "postgresql":
        return SandboxJob.objects.filter(job_id=job_id).first()
    fields = SandboxJob._meta.concrete_fields
    if not _RECORD_SQL:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(f.column)) for f in fields)
        table = quote(SandboxJob._meta.db_table)
        _RECORD_SQL.append(f"SELECT {columns} FROM {table} WHERE job_id = %s")  # noqa: S608
    with prepared_cursor() as cursor:
        cursor.execute(_RECORD_SQL[0], [job_id])
        row = cursor.fetchone()
    if row is None:
        return None
    # No column of this model needs a converter on PostgreSQL.
    return SandboxJob.from_db(connection.alias, [f.attname for f in fields], list(row))


def _seed(job: Job) -> int:
    return int(job.seed if job.seed is not None else 0)


def _aspect(prompt: str) -> tuple[int, int]:
    try:
        return prompts.aspect_ratio(prompts.parse_prompt(prompt))
    except Exception:  # the prompt was validated at submit; a parent's may be older
        return (1, 1)


def _parent_image(job: Job) -> bytes:
    parent = job.parent
    if parent is None or parent.grid is None:
        raise PermanentEngineError(
            "The parent task has no stored image.", error_code=ErrorCode.INVALID_PARAMETER
        )
    return parent.grid.read()


def _inputs(job: Job) -> list[bytes]:
    return [image.read() for image in job.images]


def _mask(job: Job) -> bytes:
    if job.mask is None:
        raise PermanentEngineError(
            "Vary (Region) needs a mask.", error_code=ErrorCode.INVALID_PARAMETER
        )
    return job.mask.read()


def _numbered(items: list[str]) -> str:
    marks = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣"]
    return "\n\n".join(f"{marks[i]} {text}" for i, text in enumerate(items))


def render_result(job: Job) -> PollResult:
    """Produce the finished job's output for every action (SPEC §5 sandbox bullet)."""
    params = job.params
    seed = _seed(job)
    action = job.action
    variant = params.get("variant", "")
    if action == Action.IMAGINE:
        image = render.render_grid(job.prompt, seed, _aspect(job.prompt))
        return _grid(apply_references(image, job.references), seed)
    if action == Action.REROLL:
        if params.get("reroll_of") == Action.BLEND and job.images:
            image = render.render_blend(_inputs(job), params.get("dimensions", "SQUARE"), seed)
            return _grid(image, seed)
        parent = job.parent
        # A remixed reroll runs the prompt given in the remix step.
        prompt = parent.prompt if parent and not is_remixed(params) else job.prompt
        # SPEC §4.3: a reroll is its parent's action again, on that action's own inputs.
        if params.get("reroll_of") == Action.EDIT and job.images and job.mask is not None:
            return _grid(render_edit(_inputs(job)[0], _mask(job), prompt, seed), seed)
        if params.get("reroll_of") == Action.RETEXTURE and job.images:
            return _grid(render_retexture(_inputs(job)[0], prompt, seed), seed)
        image = render.render_grid(prompt, seed, _aspect(prompt))
        return _grid(apply_references(image, job.references), seed)
    if action == Action.UPSCALE:
        source = _parent_image(job)
        if variant in ("subtle", "creative"):
            image = render.render_upscale(source, None, factor=2, creative=variant == "creative")
        else:
            image = render.render_upscale(source, int(params.get("index") or 1))
        return _single(image, seed)
    if action == Action.VARIATION:
        source = _parent_image(job)
        if variant == "inpaint":
            return _grid(render.render_inpaint(source, _mask(job), job.prompt, seed), seed)
        if variant in ("low", "high"):
            strength: render.VariationStrength = "subtle" if variant == "low" else "strong"
            varied = render.render_variation(source, seed, strength)
        else:
            quadrant = render.grid_quadrant(source, int(params.get("index") or 1))
            varied = render.render_variation(quadrant, seed, "grid")
        if is_remixed(params):
            varied = render_remix(varied, job.prompt, seed)
        return _grid(varied, seed)
    if action == Action.ZOOM:
        factor = float(params.get("zoom_factor") or 2.0)
        return _grid(render.render_zoom(_parent_image(job), factor, seed=seed), seed)
    if action == Action.PAN:
        direction = params.get("pan_direction") or "left"
        if direction not in ("left", "right", "up", "down"):
            raise PermanentEngineError(
                f"Unknown pan direction '{direction}'.", error_code=ErrorCode.INVALID_PARAMETER
            )
        pan = cast(render.PanDirection, direction)
        panned = render.render_pan(_parent_image(job), pan, seed=seed)
        if is_remixed(params):
            panned = render_remix(panned, job.prompt, seed)
        return _grid(panned, seed)
    if action == Action.BLEND:
        image = render.render_blend(_inputs(job), params.get("dimensions", "SQUARE"), seed)
        return _grid(image, seed)
    if action == Action.EDIT:
        return _grid(render_edit(_inputs(job)[0], _mask(job), job.prompt, seed), seed)
    if action == Action.RETEXTURE:
        return _grid(render_retexture(_inputs(job)[0], job.prompt, seed), seed)
    if action == Action.SWAP_FACE:
        source, target = _inputs(job)[:2]
        return _single(render.render_swap_face(source, target), seed)
    if action == Action.VIDEO:
        return video_result(job, seed)
    if action == Action.DESCRIBE:
        image = _inputs(job)[0]
        described = render.describe_prompts(image)
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            image=ResultImage(data=image),
            is_grid=False,
            properties={"finalPrompt": _numbered(described), "prompts": described},
            seed=seed,
        )
    if action == Action.SHORTEN:
        analysis, shorter = render.shorten_prompt(job.prompt)
        return PollResult(
            status=PollResult.SUCCESS,
            progress=100,
            properties={
                "finalPrompt": f"{analysis}\n\n{_numbered(shorter)}",
                "analysis": analysis,
                "prompts": shorter,
            },
            seed=seed,
        )
    raise PermanentEngineError(
        f"The sandbox cannot run {action} tasks.", error_code=ErrorCode.INVALID_PARAMETER
    )


def _grid(image: bytes, seed: int) -> PollResult:
    return PollResult(
        status=PollResult.SUCCESS,
        progress=100,
        image=ResultImage(data=image),
        is_grid=True,
        seed=seed,
    )


def _single(image: bytes, seed: int) -> PollResult:
    return PollResult(
        status=PollResult.SUCCESS,
        progress=100,
        image=ResultImage(data=image),
        is_grid=False,
        seed=seed,
    )


register(SandboxEngine())
