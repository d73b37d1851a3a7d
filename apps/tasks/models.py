"""The Midjourney task: one request of a tenant, from acceptance to a terminal status."""

from __future__ import annotations

import secrets
import threading
import time

from django.conf import settings
from django.db import models

from apps.accounts.models import Organization
from apps.core.cache import ConfigQuerySet

from .enums import TERMINAL_STATUSES, Action, ErrorCode, Mode, Pool, Status
from .prompt import known_seed

_last_task_id = 0
_task_id_lock = threading.Lock()


def new_task_id() -> str:
    """A numeric string like midjourney-proxy's ids (clients store them as strings).

    Millisecond time then six random digits: roughly sortable, and unguessable enough (tenancy
    never relies on secrecy). Within one process ids are strictly increasing, so a bulk of ids
    made in the same millisecond never collide (random digits alone would: a thousand ids in one
    millisecond meet a birthday collision about one time in three); across processes the random
    digits keep a clash negligible.
    """
    global _last_task_id
    candidate = int(time.time() * 1000) * 1_000_000 + secrets.randbelow(1_000_000)
    with _task_id_lock:
        if candidate <= _last_task_id:
            candidate = _last_task_id + 1 + secrets.randbelow(1_000)
        _last_task_id = candidate
    return str(candidate)


#: The process-wide copy of the active banned words (``apps.tasks.selectors``).
BANNED_WORDS_CACHE = "banned-words"


class Protocol(models.TextChoices):
    MJPROXY = "mjproxy", "midjourney-proxy"
    TTAPI = "ttapi", "TTAPI"
    NATIVE = "v1", "Native v1"
    DASHBOARD = "dashboard", "Dashboard"


class Task(models.Model):
    """A task. Status changes are compare-and-set updates (see ``apps.tasks.services``).

    The queue of accepted work is this table itself: NOT_START rows wait for the dispatcher,
    which assigns an upstream account under ``SELECT … FOR UPDATE SKIP LOCKED``. Nothing about
    a task's progress lives only in the broker, so a restart of any process loses nothing.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_task_id, editable=False)
    # Indexed by task_org_recent and task_org_status (organization first), so no index of its
    # own: every index is written by each insert and each status change (tasks 0014).
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    api_key = models.ForeignKey(
        "api_keys.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    # Indexed where set (``task_created_by``): an API submit has none.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    is_test = models.BooleanField(default=False)
    protocol = models.CharField(max_length=16, choices=Protocol.choices, default=Protocol.NATIVE)

    action = models.CharField(max_length=16, choices=Action.choices)
    # Indexed by task_queue (status first) and the partial indexes on queued rows.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NOT_START)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.FAST)
    # Indexed where set (``task_parent``): a new task has none.
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        db_index=False,
    )
    custom_id = models.CharField(max_length=200, blank=True, help_text="Button pressed.")

    prompt = models.TextField(blank=True, help_text="As the client sent it.")
    prompt_en = models.TextField(blank=True, help_text="As sent upstream (flags stripped).")
    description = models.TextField(blank=True)
    state = models.TextField(null=True, blank=True, help_text="Client data echoed verbatim.")
    params = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=list, blank=True, help_text="Stored input image names.")
    notify_hook = models.URLField(max_length=2048, blank=True)

    engine = models.CharField(max_length=32, blank=True, db_index=True)
    upstream_account = models.ForeignKey(
        "engines.UpstreamAccount",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tasks",
        db_index=False,  # task_account_status starts with it
    )
    upstream_job_id = models.CharField(max_length=128, blank=True, db_index=True)
    engine_state = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(
        default=dict, blank=True, help_text="Stored result files: grid, splits, thumbnails."
    )
    buttons = models.JSONField(default=list, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    fail_reason = models.TextField(blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, blank=True)

    price = models.PositiveBigIntegerField(default=0, help_text="Tokens held for this task.")
    pool = models.CharField(
        max_length=16,
        choices=Pool.choices,
        default=Pool.SHARED,
        help_text="Whose upstream accounts may run it: the shared pool, the organization's own, "
        "or its own then the shared pool.",
    )
    own_fee = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Platform fee charged instead of the price when one of the organization's own "
        "accounts runs it (own pools only).",
    )
    tokens_captured = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens the ledger captured when it succeeded, written in the capture's "
        "transaction (empty until then).",
    )
    # Nullable with no default (tasks 0024): adding it rewrites nothing, and the one-statement
    # acceptance (``tasks_task_accept``, jsonb_populate_record) reads a missing key as null.
    tokens_refunded = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens given back by the operator's refund of this task, written in the "
        "refund's transaction (empty when it was not refunded).",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True, help_text="Accepted and queued.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    start_deadline = models.DateTimeField(null=True, blank=True)
    run_deadline = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    submit_claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="A worker began the engine submit (at most once)."
    )
    poll_token = models.CharField(max_length=32, blank=True, help_text="Current poll chain.")
    tenant_seq = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Place in its tenant's part of its pool's queue: the tenant's counter for the "
        "pool (TenantQueueCounter) at acceptance.",
    )
    slot_freed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The upstream finished the job: its account slot is free, the result is "
        "being stored.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="task_org_recent"),
            models.Index(fields=["organization", "status"], name="task_org_status"),
            models.Index(fields=["status", "mode", "submitted_at"], name="task_queue"),
            # The dispatcher's fair pick (scheduling._queued_candidates_fair walks one entry per
            # tenant and pool for the heads, then reads a few per tenant): queued rows only, so
            # it stays small.
            models.Index(
                fields=["organization", "is_test", "mode", "pool", "submitted_at", "id"],
                condition=models.Q(status="NOT_START"),
                name="task_queued_fair",
            ),
            # The columns below are empty when a task is submitted (and, but for the parent and
            # the user, until it is claimed or finished): each index holds only the rows that
            # have a value, so a submit and each status change before it is set write none of
            # them. Every query of these columns compares them with a value (``=``, ``IN``,
            # ``>=``), which the planner knows excludes NULL, so the partial indexes serve them.
            models.Index(
                fields=["upstream_account", "status"],
                name="task_account_status",
                condition=models.Q(upstream_account__isnull=False),
            ),
            models.Index(
                fields=["parent"], name="task_parent", condition=models.Q(parent__isnull=False)
            ),
            models.Index(
                fields=["created_by"],
                name="task_created_by",
                condition=models.Q(created_by__isnull=False),
            ),
            # The operator admin: its list is newest first, and the stats page reads the last
            # hour of created and finished tasks (apps/operator/selectors.py).
            models.Index(fields=["created_at"], name="task_created"),
            models.Index(
                fields=["finished_at"],
                name="task_finished",
                condition=models.Q(finished_at__isnull=False),
            ),
            # Each tenant's part of each pool's queue (the fair queue position): its head, tail
            # and n-th task by a probe. Only numbered rows, so the fair pick (which asks for
            # every queued row) keeps reading ``task_queued_fair``.
            models.Index(
                fields=["organization", "is_test", "mode", "tenant_seq"],
                name="task_tenant_queued",
                condition=models.Q(status="NOT_START", tenant_seq__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def served_by_own_account(self) -> bool:
        """One of the organization's own upstream accounts ran (or runs) it."""
        if self.own_fee is None or self.upstream_account_id is None:
            return False
        account = self.upstream_account
        return account is not None and account.owner_id == self.organization_id

    @property
    def tokens_charged_before_refund(self) -> int:
        """What the ledger took on success, before any refund: the price is captured only on
        success (the platform fee when its own account ran it); test tasks are free.

        What the ledger captured, as recorded then: the upstream account may be deleted later
        (the task keeps no account), which must not turn a platform fee into the price. Tasks
        that succeeded before the capture was recorded fall back to deciding it now.
        """
        if self.status != Status.SUCCESS or self.is_test:
            return 0
        if self.tokens_captured is not None:
            return int(self.tokens_captured)
        if self.served_by_own_account:
            return int(self.own_fee or 0)
        return int(self.price)

    @property
    def seed_known(self) -> int | None:
        """The seed a client may be told now: until the job starts only one the prompt fixes
        (``prompt.known_seed``; the one drawn at acceptance is replaced by an engine whose
        upstream picks its own), afterwards the task's own."""
        return known_seed(
            current=self.seed, prompt=self.prompt_en, started=self.started_at is not None
        )

    @property
    def tokens_charged(self) -> int:
        """What the customer paid in the end: what was captured (``tokens_charged_before_refund``)
        less what the operator's refund gave back (``ledger_refund_task``), never below 0."""
        captured = self.tokens_charged_before_refund
        if captured == 0:
            return 0
        return max(captured - int(self.tokens_refunded or 0), 0)


class TenantQueueCounter(models.Model):
    """The last number given to a tenant's tasks in one pool (a mode, live or test).

    Bumped under the organization's lock at acceptance (``services.acceptance``), so a
    tenant's queued tasks are numbered in the order they queued: a task's rank within its
    tenant is its number minus the tenant's smallest queued number, read by one index probe
    (``selectors.task_queue_estimate``) instead of a COUNT of the queue.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    is_test = models.BooleanField()
    last = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "mode", "is_test"], name="tenant_queue_counter_pool"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.mode} {'test' if self.is_test else 'live'}"


class BannedWordQuerySet(ConfigQuerySet):
    cache_name = BANNED_WORDS_CACHE


class BannedWord(models.Model):
    """Operator-managed list; matched whole-word and case-insensitively (SPEC §4.5)."""

    word = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BannedWordQuerySet.as_manager()

    class Meta:
        ordering = ("word",)

    def __str__(self) -> str:
        return self.word

    def save(self, *args: object, **kwargs: object) -> None:
        self.word = " ".join(self.word.split()).lower()
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class SweepMark(models.Model):
    """When the sweeper last ran (one row, ``name="sweep"``), in PostgreSQL: it must survive
    the broker outage it is there to notice. A gap much longer than the sweep interval means
    nothing could move (broker, beat or every worker down), so the sweeper pushes deadlines by
    the gap and re-sends lost messages instead of timing the tasks out."""

    name = models.CharField(primary_key=True, max_length=32)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
