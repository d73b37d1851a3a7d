"""Upstream accounts: the capacity tasks run on (SPEC §5)."""

from __future__ import annotations

from django.db import models

from apps.accounts.models import Organization
from apps.core.crypto import EncryptedJSONField
from apps.core.models import TimeStampedModel


class Health(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    COOLING_DOWN = "cooling_down", "Cooling down"
    NEEDS_VERIFICATION = "needs_verification", "Needs verification"
    FAST_HOURS_EXHAUSTED = "fast_hours_exhausted", "Fast hours exhausted"
    BANNED = "banned", "Banned"


class UpstreamAccount(TimeStampedModel):
    """One upstream account of one engine, serving one or more modes.

    ``options`` holds non-secret engine settings (sandbox duration, mjproxy base_url);
    ``secrets`` is encrypted at rest and never serialised or shown after saving.

    ``owner`` empty: the platform's shared pool. Set: an organization's own account (bring your
    own accounts), which only ever runs that organization's tasks of the ``own`` and
    ``own_then_shared`` pools (``apps.engines.selectors.upstream_account_takes``, the one
    definition the dispatcher and every read of free slots use). Names are unique within the
    shared pool and within each organization, so a tenant never learns another one's names.
    """

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="upstream_accounts",
        help_text="The organization whose own account this is; empty for the shared pool.",
    )
    engine = models.CharField(max_length=32, db_index=True)
    modes = models.JSONField(default=list, help_text="Modes served: FAST, RELAX, TURBO.")
    concurrency = models.PositiveSmallIntegerField(default=3, help_text="Jobs running at once.")
    queue_size = models.PositiveSmallIntegerField(
        default=10, help_text="Jobs the upstream may hold waiting beyond the running ones."
    )
    run_timeout_seconds = models.PositiveIntegerField(default=600)
    is_enabled = models.BooleanField(default=True, db_index=True)
    is_sandbox_pool = models.BooleanField(
        default=False, help_text="The built-in pool that serves test keys."
    )
    health = models.CharField(
        max_length=24, choices=Health.choices, default=Health.HEALTHY, db_index=True
    )
    health_reason = models.CharField(max_length=500, blank=True)
    health_changed_at = models.DateTimeField(null=True, blank=True)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    options = models.JSONField(default=dict, blank=True)
    secrets = EncryptedJSONField(default=dict, blank=True, editable=False)
    total_submitted = models.PositiveBigIntegerField(default=0)
    total_succeeded = models.PositiveBigIntegerField(default=0)
    total_failed = models.PositiveBigIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(owner__isnull=True),
                name="upstream_shared_name_unique",
            ),
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=models.Q(owner__isnull=False),
                name="upstream_owned_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.engine})"

    def serves(self, mode: str) -> bool:
        return mode in (self.modes or [])


class SandboxJob(models.Model):
    """The sandbox upstream's own record of a job, as a real upstream server would keep one.

    Each sandbox account is an upstream of its own, with at most one live (not cancelled) job
    per task: submitting the same task to the same account again finds that job instead of
    starting a second one, which is what makes sandbox submits idempotent (and lets a submit
    interrupted by a dead worker be adopted). A task an operator moves to another account, or
    back to one whose job was stopped, gets a fresh job there — not the stalled or cancelled
    one it was moved away from.
    """

    job_id = models.CharField(max_length=40, primary_key=True)
    task_id = models.CharField(max_length=32, db_index=True)
    account = models.ForeignKey(UpstreamAccount, on_delete=models.CASCADE, related_name="+")
    duration = models.FloatField()
    will_fail = models.BooleanField(default=False)
    stall = models.BooleanField(default=False)
    submit_calls = models.PositiveIntegerField(default=1)
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "task_id"],
                condition=models.Q(cancelled=False),
                name="sandboxjob_one_live_job_per_task",
            )
        ]

    def __str__(self) -> str:
        return f"sandbox job {self.job_id} for task {self.task_id}"
