"""The interface every upstream engine implements, and the registry that finds them by name.

An engine turns one job (a frozen :class:`Job`, built by the task lifecycle from a task and the
account it runs on) into work upstream: ``submit`` starts it and returns the upstream job id,
``poll`` reports progress and, at the end, the result; ``cancel`` is best effort. Engines never
touch task status or money — the task lifecycle does that — so adding an engine cannot break an
invariant.

The registry is filled by importing the engine modules: ``EnginesConfig.ready`` imports the
built-in ones by name (a plain import any tool can follow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


class EngineError(Exception):
    """Base class. ``message`` is a human sentence safe to show the customer."""

    def __init__(self, message: str, *, error_code: str = "UPSTREAM_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


class TemporaryEngineError(EngineError):
    """Try again later, on the same or another account (upstream down, queue full).

    Raise it from ``submit`` only when the upstream certainly did not accept the job (a refused
    connection, an explicit "queue full"): the task is then given to the queue again. A submit
    whose outcome is unknown (a read timeout after the request was sent) must not claim this,
    or the job could run twice.
    """


class SubmitOutcomeUnknown(EngineError):
    """``submit`` sent the job but cannot tell whether the upstream accepted it (a read timeout,
    a dropped connection after the request went out).

    ``still_working``: the upstream may still be acting on the request (no answer came, or a
    gateway in front of it gave up waiting), so a look-up that finds nothing soon after is not
    yet proof that nothing arrived (``Engine.unknown_outcome_settle_seconds``). False when
    the upstream itself answered (a crash): it made the job or it never will.

    For engines that can look a job up (``idempotent_submit``) the task stays assigned and the
    next ``task_start`` asks ``find_job`` before submitting again; for the others it fails with
    its hold released, because submitting again could run — and charge for — the job twice.
    Raised by ``poll`` it is simply a poll to repeat, like a temporary error.
    """

    def __init__(
        self, message: str, *, error_code: str = "UPSTREAM_ERROR", still_working: bool = True
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.still_working = still_working


class PermanentEngineError(EngineError):
    """The task cannot succeed (banned prompt, invalid parameters, rejected upstream)."""


@dataclass(frozen=True)
class ResultImage:
    """An image the engine produced: bytes (sandbox) or a URL we download (real upstreams)."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class ResultVideo:
    """A video clip the engine produced (MP4): bytes (sandbox) or a URL we download."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    upstream_job_id: str
    state: dict[str, Any] = field(default_factory=dict)
    #: Seconds the upstream expects the job to take, when it says (the first poll is then
    #: scheduled for about then instead of a fixed interval later).
    eta_seconds: float | None = None


@dataclass(frozen=True)
class PollResult:
    """What an engine knows about a job now. ``status`` is running, success or failure."""

    status: str
    progress: int = 0
    image: ResultImage | None = None
    #: Video clips (a VIDEO job's batch); ``image`` is then their poster (the first frame).
    videos: tuple[ResultVideo, ...] = ()
    #: The image is a 2×2 grid (split into four) rather than a single picture.
    is_grid: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    description: str = ""
    fail_reason: str = ""
    error_code: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    #: RUNNING: seconds until the upstream expects to be done, when it knows (the next poll is
    #: scheduled for then, not a fixed interval later).
    eta_seconds: float | None = None
    #: SUCCESS from ``poll_status``: the upstream is done, but the result was not produced
    #: (``poll`` produces it). The lifecycle frees the account's slot at once and has the
    #: result made and stored off the slot's critical path.
    result_pending: bool = False

    RUNNING: ClassVar[str] = "running"
    SUCCESS: ClassVar[str] = "success"
    FAILURE: ClassVar[str] = "failure"


# --- The job value (the engine boundary) -----------------------------------------------------
#
# Engines are pure adapters: the lifecycle builds a frozen ``Job`` from a task and its account,
# hands it to the engine, and applies what comes back (``SubmitResult``, ``PollResult``,
# ``JobUpdate``). Engines never import task models or the lifecycle, and never write task rows;
# their own tables (``SandboxJob``, gateway leases …) are theirs alone.

#: Reads a stored file (an input image, a parent's result) by its storage name. The lifecycle
#: injects it, so engines need no import of the task app's storage.
FileReader = Callable[[str], bytes]


@dataclass(frozen=True)
class StoredFile:
    """A file in our storage, read on demand (input images can be tens of MiB)."""

    name: str
    reader: FileReader = field(repr=False, compare=False)

    def read(self) -> bytes:
        return self.reader(self.name)


def _no_running_jobs() -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class AccountView:
    """What an engine may know about the upstream account a job runs on."""

    id: int
    engine: str
    name: str
    modes: tuple[str, ...]
    options: Mapping[str, Any]
    #: Decrypted credentials; never logged, never returned in a result.
    secrets: Mapping[str, Any] = field(repr=False)
    #: The upstream job ids of the account's running tasks, oldest first, read on demand (an
    #: engine that polls in batches asks one upstream round for all of them). Injected by the
    #: lifecycle, like the file reader, so engines need no import of the task models.
    running_jobs: Callable[[], Sequence[str]] = field(
        default=_no_running_jobs, repr=False, compare=False
    )
    #: The platform's operator configured it (the shared pool). False: an organization's own
    #: account, whose addresses a customer chose, so every call to it gets the full SSRF
    #: guard (no private or loopback addresses), like a customer's webhook URL.
    operator_managed: bool = True


@dataclass(frozen=True)
class ParentRef:
    """The task a follow-up (U1, V2, zoom, pan …) was pressed on, as the engine needs it."""

    task_id: str
    action: str
    prompt: str
    upstream_job_id: str
    #: The engine's own opaque state of the parent's job (message ids, upstream custom ids …).
    state: Mapping[str, Any]
    params: Mapping[str, Any]
    seed: int | None
    #: The engine that ran the parent and the account it ran on (None: the account is gone).
    engine: str = ""
    account_id: int | None = None
    #: The buttons the parent offers our customers (``{"custom_id", "label", "emoji"}``): an
    #: engine translates the pressed one into its upstream's spelling with them.
    buttons: tuple[Mapping[str, Any], ...] = ()
    #: The parent's stored result: ``grid`` (the image as delivered) and ``splits`` when it had
    #: four quadrants. Empty when the parent has no stored result.
    grid: StoredFile | None = None
    splits: tuple[StoredFile, ...] = ()
    #: The parent's stored video clips (a VIDEO parent), in batch order.
    videos: tuple[StoredFile, ...] = ()


@dataclass(frozen=True)
class Job:
    """One task as an engine sees it. Frozen: engines report changes, they do not make them."""

    task_id: str
    #: An ``apps.tasks.enums.Action`` value (IMAGINE, UPSCALE, VARIATION, ZOOM, PAN …).
    action: str
    #: FAST, RELAX or TURBO.
    mode: str
    #: The prompt as sent upstream (``prompt_en``), parameters included.
    prompt: str
    #: Domain parameters of the action (dimensions, index, zoom_factor, pan_direction, variant,
    #: reroll_of …) — domain names, never a dialect's wire names.
    params: Mapping[str, Any]
    account: AccountView
    #: The button pressed, in Midjourney's button id format (follow-ups only).
    custom_id: str = ""
    #: MID_JOURNEY or NIJI_JOURNEY: which bot serves the job.
    bot: str = "MID_JOURNEY"
    seed: int | None = None
    images: tuple[StoredFile, ...] = ()
    mask: StoredFile | None = None
    parent: ParentRef | None = None
    #: Set once the engine's submit returned (empty before).
    upstream_job_id: str = ""
    #: The engine's own opaque state for this job, as its last result returned it.
    state: Mapping[str, Any] = field(default_factory=dict)
    #: The progress last recorded, so an engine can report only forward movement.
    progress: int = 0
    #: Images the prompt references, stored by us: kind (``sref``, ``cref``, ``oref``,
    #: ``image``) → files. The prompt carries their URLs; a renderer may read them.
    references: Mapping[str, tuple[StoredFile, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobUpdate:
    """News about a job that arrived without being asked for (an upstream callback, a gateway
    event): the lifecycle finds the task by ``upstream_job_id`` on ``account_id`` (or by
    ``task_id`` when the engine knows it, e.g. from a nonce) and applies ``result`` with the
    same compare-and-set transitions as a poll's: progress moves forward, a failure fails the
    task. A SUCCESS is a hint, never applied from the update itself: fetching and storing the
    result is a worker's job, so the lifecycle runs the task's next poll step at once, and the
    engine's ``poll`` must then report the result (keep what the update said where ``poll``
    looks first)."""

    account_id: int
    upstream_job_id: str
    result: PollResult
    task_id: str = ""


class Engine:
    name: ClassVar[str] = ""
    #: The engine can find the job a submit of this task started (``find_job``), so a submit
    #: interrupted by a dead worker is resumed instead of failed: the sweeper hands the task
    #: back, ``find_job`` adopts the job if it exists and only otherwise is it submitted.
    idempotent_submit: ClassVar[bool] = False
    #: Follow-ups (U1, V2 …) must run on the account that made the parent.
    follow_ups_need_parent_account: ClassVar[bool] = True
    #: The upstream picks the seed of a job (unless the prompt fixes one with ``--seed``), so
    #: the task's seed is unknown until ``image_seed`` asks for it. Engines that render with the
    #: seed we chose (the sandbox) leave this off.
    seed_from_upstream: ClassVar[bool] = False

    def submit(self, job: Job) -> SubmitResult:
        raise NotImplementedError

    def unknown_outcome_settle_seconds(self) -> float:
        """How long after a submit whose outcome is unknown (no answer) the upstream may still
        be creating its job, so that ``find_job`` cannot see it yet: until then "not found" is
        not taken as "never arrived", and nothing is submitted again (0: no such delay)."""
        return 0.0

    def find_job(self, job: Job) -> SubmitResult | None:
        """The upstream job an earlier submit of ``job`` started, or None if there is none.

        Only called for engines with ``idempotent_submit``, after a worker died mid-submit.
        """
        raise NotImplementedError

    def poll(self, job: Job) -> PollResult:
        raise NotImplementedError

    def poll_status(self, job: Job) -> PollResult:
        """``poll``, except that a finished job may be answered cheaply: SUCCESS with
        ``result_pending`` and no result, when producing the result is the slow part (the
        sandbox renders it). The lifecycle then calls ``poll`` for the result, after the
        account's slot is free again. The default is ``poll`` itself."""
        return self.poll(job)

    def cancel(self, job: Job) -> None:
        """Best effort; the default is to let the upstream job run out."""

    def image_seed(self, job: Job) -> int | None:
        """The seed the upstream used for ``job`` (finished), or None if it has none.

        Only called for engines with ``seed_from_upstream``; raises ``TemporaryEngineError``
        when the upstream cannot be asked right now.
        """
        raise NotImplementedError

    def callback_authentic(self, account: AccountView, token: str) -> bool:
        """Whether ``token`` (from the callback URL) proves a callback comes from ``account``'s
        upstream. Engines without upstream callbacks accept none."""
        return False

    def parse_callback(self, account: AccountView, payload: Mapping[str, Any]) -> list[JobUpdate]:
        """The news an authenticated upstream callback carries (empty: nothing we know)."""
        return []

    def validate_options(self, options: dict[str, Any], secrets: dict[str, Any]) -> None:
        """Raise ValueError with a clear message for bad account options."""

    def fast_falls_back_to_relax(self, options: Mapping[str, Any]) -> bool:
        """Whether an account with these options whose fast hours ran out still takes FAST
        jobs, running them in relax mode (the dispatcher keeps giving it FAST work). No
        unless the engine knows such a setting."""
        return False


_REGISTRY: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    if not engine.name:
        raise ValueError("An engine needs a name.")
    _REGISTRY[engine.name] = engine
    return engine


def get_engine(name: str) -> Engine:
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"Unknown engine '{name}'. Known engines: {known}.") from exc


def engine_names() -> list[str]:
    return sorted(_REGISTRY)
