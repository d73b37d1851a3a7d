"""The interface every upstream engine implements, and the registry that finds them by name.

An engine turns one task into work on one upstream account: ``submit`` starts it and returns
the upstream job id, ``poll`` reports progress and, at the end, the result; ``cancel`` is best
effort. Engines never touch task status or money — the task lifecycle does that — so adding an
engine cannot break an invariant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """Try again later, on the same or another account (upstream down, queue full)."""


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


class Engine:
    name: ClassVar[str] = ""
    #: Submitting the same task twice cannot create two upstream jobs (the upstream dedupes by
    #: our task id), so a submit interrupted by a crash may simply be retried.
    idempotent_submit: ClassVar[bool] = False
    #: Follow-ups (U1, V2 …) must run on the account that made the parent.
    follow_ups_need_parent_account: ClassVar[bool] = True

    def submit(self, *, account: UpstreamAccount, task: Task) -> SubmitResult:
        raise NotImplementedError

    def poll(self, *, account: UpstreamAccount, task: Task) -> PollResult:
        raise NotImplementedError

    def cancel(self, *, account: UpstreamAccount, task: Task) -> None:
        """Best effort; the default is to let the upstream job run out."""

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


def _load_builtin_engines() -> None:
    # Imported lazily so that engines can import task models without an import cycle.
    from apps.engines.sandbox import engine as _sandbox  # noqa: F401
