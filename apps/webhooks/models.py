"""Webhook endpoints, signing secrets, the outbox of messages and the log of delivery attempts.

Delivery is at-least-once from a durable outbox (SPEC §7):

* ``WebhookEvent`` is one message to one target (a task's own hook URL or an organization
  endpoint). It is written in the same transaction as the change it reports, with the exact body
  that will be sent and a stable ``msg_id`` (the ``webhook-id`` header, the same on every retry).
* ``WebhookDelivery`` is one attempt. An event always has exactly one *pending* attempt until it
  succeeds or dies (a partial unique constraint says so); a failed attempt schedules the next as
  a new row, so the attempt log is complete and never rewritten.
* The broker only says "there is work": a beat task finds due pending attempts in the database,
  so a message lost between commit and delivery, or a worker killed mid-request, only delays it.
* For one task and one target, message N+1 is held back while message N is still pending, so a
  receiver never sees a later state followed by an earlier one.
* While a target is down, progress snapshots would pile up behind the held message, one per
  percent. A new progress-only message (same status as the message before it) therefore
  supersedes the held, never-attempted progress-only messages directly ahead of it: the
  receiver still gets every status change, in order, and the latest progress, not each step.
* Finished messages and their attempt log are deleted after ``WEBHOOK_RETENTION_DAYS``.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.crypto import decrypt_text
from apps.core.models import TimeStampedModel


class EventType(models.TextChoices):
    TASK_CREATED = "task.created", "Task created"
    TASK_UPDATED = "task.updated", "Task updated (every change)"
    TASK_SUCCEEDED = "task.succeeded", "Task succeeded"
    TASK_FAILED = "task.failed", "Task failed"
    TASK_CANCELLED = "task.cancelled", "Task cancelled"
    BALANCE_LOW = "balance.low", "Balance low"
    TEST = "webhook.test", "Test event"


#: Event types an endpoint may subscribe to (the test event goes to the endpoint it tests).
SUBSCRIBABLE_EVENT_TYPES: tuple[str, ...] = (
    EventType.TASK_CREATED,
    EventType.TASK_UPDATED,
    EventType.TASK_SUCCEEDED,
    EventType.TASK_FAILED,
    EventType.TASK_CANCELLED,
    EventType.BALANCE_LOW,
)


class WebhookEndpoint(TimeStampedModel):
    """An organization-level receiver. ``event_types`` empty means every event type."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    is_enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=255, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="Start of the current run of failed attempts."
    )

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["organization", "is_enabled"], name="whep_org_enabled")]

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookSecret(models.Model):
    """An organization's signing secret, encrypted at rest.

    The current secret has ``expires_at`` NULL (at most one per organization). Rotation stamps
    the current one with the end of the overlap window and adds a new one; until then messages
    carry a signature for each, so receivers can switch at their own pace.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_secrets"
    )
    secret_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(expires_at__isnull=True),
                name="webhook_secret_one_current",
            )
        ]

    def __str__(self) -> str:
        # Never the secret itself.
        state = (
            "current" if self.expires_at is None else f"expires {self.expires_at:%Y-%m-%d %H:%M}"
        )
        return f"Webhook secret of organization {self.organization_id} ({state})"

    def reveal(self) -> str:
        return decrypt_text(self.secret_encrypted)


class EventState(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    DEAD = "dead", "Dead"
    SUPERSEDED = "superseded", "Superseded by a newer progress message (not sent)"


class WebhookEvent(models.Model):
    """One outbox message to one target. Its body is fixed at publish time."""

    msg_id = models.CharField(max_length=40, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_events"
    )
    event_type = models.CharField(max_length=64, choices=EventType.choices)
    body = models.TextField(help_text="The exact JSON sent, identical on every attempt.")
    task = models.ForeignKey(
        "tasks.Task",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="webhook_events",
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="events",
        help_text="Set for organization endpoints; empty for a task's own hook.",
    )
    url = models.CharField(
        max_length=2048, blank=True, help_text="The task's hook URL (endpoints use their own)."
    )
    target_key = models.CharField(
        max_length=80, help_text="Identifies the receiver for ordering: endpoint id or URL hash."
    )
    sequence = models.PositiveIntegerField(
        default=0, help_text="Order of this message among the task's messages to this target."
    )
    task_status = models.CharField(
        max_length=16, blank=True, help_text="The task's status this message reports."
    )
    progress_only = models.BooleanField(
        default=False,
        help_text="Reports the same status as the previous message to this target (progress).",
    )
    state = models.CharField(max_length=16, choices=EventState.choices, default=EventState.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["task", "target_key", "sequence"],
                condition=models.Q(task__isnull=False),
                name="webhook_event_task_sequence",
            )
        ]
        indexes = [
            models.Index(fields=["task", "target_key", "state"], name="whev_task_chain"),
            models.Index(fields=["organization", "-created_at"], name="whev_org_recent"),
            # The retention purge: finished messages, oldest first.
            models.Index(
                fields=["finished_at"],
                condition=~models.Q(state="pending"),
                name="whev_finished",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.msg_id}"

    @property
    def target_url(self) -> str:
        return self.endpoint.url if self.endpoint_id and self.endpoint else self.url


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (retry scheduled)"
    DEAD = "dead", "Dead (no more retries)"
    SUPERSEDED = "superseded", "Superseded (not sent)"


class DeliveryTrigger(models.TextChoices):
    AUTO = "auto", "Automatic"
    MANUAL = "manual", "Manual (resend or test)"


class WebhookDelivery(models.Model):
    """One attempt to deliver an event. Rows are appended, never reused for another attempt.

    ``dispatched_until`` stops the beat task from queueing the same attempt again while a worker
    should be on it; ``claimed_until``/``claim_token`` are the lease of the worker that sends it.
    Both are leases, not locks: if a process dies, they expire and the attempt is picked up again.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    trigger = models.CharField(
        max_length=8, choices=DeliveryTrigger.choices, default=DeliveryTrigger.AUTO
    )
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    next_attempt_at = models.DateTimeField(help_text="When this attempt is due.")
    dispatched_until = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    attempted_at = models.DateTimeField(null=True, blank=True)
    url = models.CharField(max_length=2048, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="First 2 KiB of the response.")
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event"],
                condition=models.Q(state="pending"),
                name="webhook_delivery_one_pending",
            )
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="whdl_due"),
            models.Index(fields=["organization", "-id"], name="whdl_org_recent"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.attempt} of {self.event_id} ({self.state})"


class WebhookGoneHook(models.Model):
    """A task's own hook (``notifyHook`` and its kin) that answered 410 Gone (SPEC §7: "410
    disables at once").

    A task hook has no endpoint row to disable, so the 410 is recorded for the chain: the task
    and its hook's target. No later message of that task is written for the hook, and one
    written while the 410 was being recorded is ended unsent when it is claimed. A manual
    resend still goes out (someone asked for it).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey("tasks.Task", on_delete=models.CASCADE, related_name="+")
    target_key = models.CharField(max_length=80, help_text="The hook's target (URL hash).")
    gone_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "target_key"], name="webhook_gone_hook_once")
        ]

    def __str__(self) -> str:
        return f"Hook {self.target_key} of task {self.task_id} is gone"
