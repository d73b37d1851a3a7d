"""The interface every upstream engine implements, and the registry that finds them by name.

An engine turns one task into work on one upstream account: ``submit`` starts it and returns
the upstream job id, ``poll`` reports progress and, at the end, the result; ``cancel`` is best
effort. Engines never touch task status or money — the task lifecycle does that — so adding an
engine cannot break an invariant.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from apps.tasks.models import Task

    from .models import UpstreamAccount


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

    For engines that can look a job up (``idempotent_submit``) the task stays assigned and the
    next ``task_start`` asks ``find_job`` before submitting again; for the others it fails with
    its hold released, because submitting again could run — and charge for — the job twice.
    Raised by ``poll`` it is simply a poll to repeat, like a temporary error.
    """


class PermanentEngineError(EngineError):
    """The task cannot succeed (banned prompt, invalid parameters, rejected upstream)."""


@dataclass(frozen=True)
class ResultImage:
    """An image the engine produced: bytes (sandbox) or a URL we download (real upstreams)."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    upstream_job_id: str
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PollResult:
    """What an engine knows about a job now. ``status`` is running, success or failure."""

    status: str
    progress: int = 0
    image: ResultImage | None = None
    #: The image is a 2×2 grid (split into four) rather than a single picture.
    is_grid: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    description: str = ""
    fail_reason: str = ""
    error_code: str = ""
    state: dict[str, Any] = field(default_factory=dict)

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
    #: The parent's stored result: ``grid`` (the image as delivered) and ``splits`` when it had
    #: four quadrants. Empty when the parent has no stored result.
    grid: StoredFile | None = None
    splits: tuple[StoredFile, ...] = ()


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
    #: The button pressed, in Midjourney's customId format (follow-ups only).
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


@dataclass(frozen=True)
class JobUpdate:
    """News about a job that arrived without being asked for (an upstream callback, a gateway
    event): the lifecycle finds the task by ``upstream_job_id`` on ``account_id`` (or by
    ``task_id`` when the engine knows it, e.g. from a nonce) and applies ``result`` exactly as
    it would a poll's."""

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

    def submit(self, *, account: UpstreamAccount, task: Task) -> SubmitResult:
        raise NotImplementedError

    def find_job(self, *, account: UpstreamAccount, task: Task) -> SubmitResult | None:
        """The upstream job an earlier submit of ``task`` started, or None if there is none.

        Only called for engines with ``idempotent_submit``, after a worker died mid-submit.
        """
        raise NotImplementedError

    def poll(self, *, account: UpstreamAccount, task: Task) -> PollResult:
        raise NotImplementedError

    def cancel(self, *, account: UpstreamAccount, task: Task) -> None:
        """Best effort; the default is to let the upstream job run out."""

    def image_seed(self, *, account: UpstreamAccount, task: Task) -> int | None:
        """The seed the upstream used for ``task``'s finished job, or None if it has none.

        Only called for engines with ``seed_from_upstream``; raises ``TemporaryEngineError``
        when the upstream cannot be asked right now.
        """
        raise NotImplementedError

    def validate_options(self, options: dict[str, Any], secrets: dict[str, Any]) -> None:
        """Raise ValueError with a clear message for bad account options."""


_REGISTRY: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    if not engine.name:
        raise ValueError("An engine needs a name.")
    _REGISTRY[engine.name] = engine
    return engine


def get_engine(name: str) -> Engine:
    _load_builtin_engines()
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"Unknown engine '{name}'. Known engines: {known}.") from exc


def engine_names() -> list[str]:
    _load_builtin_engines()
    return sorted(_REGISTRY)


#: Modules that register an engine when imported. An engine folder that is not there (yet) is
#: skipped; one that is there but fails to import is an error, never silently missing.
BUILTIN_ENGINE_MODULES = (
    "apps.engines.sandbox.engine",
    "apps.engines.mjproxy.engine",
    "apps.engines.discord.engine",
)


@cache
def _installed(module: str) -> bool:
    package = module.rsplit(".", 1)[0]
    return importlib.util.find_spec(package) is not None and (
        importlib.util.find_spec(module) is not None
    )


def _load_builtin_engines() -> None:
    """Import the engine modules (they register themselves). Safe from many threads at once.

    ``import_module`` waits for a module another thread is still importing, so no caller can
    see the registry before ``register`` ran. ``EnginesConfig.ready`` calls this at start-up;
    calling it again is cheap.
    """
    for module in BUILTIN_ENGINE_MODULES:
        if _installed(module):
            importlib.import_module(module)
