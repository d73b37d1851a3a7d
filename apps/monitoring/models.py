"""Alert thresholds (editable in the admin), the alerts raised, open and resolved, and what the
evaluator remembers of each condition between checks (flap damping)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class AlertSettings(models.Model):
    """One row (pk 1): what counts as trouble, and where operators hear about it."""

    queue_wait_minutes = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Alert when the oldest queued task of a mode has waited longer than this.",
    )
    success_rate_percent = models.PositiveSmallIntegerField(
        default=80,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Alert when fewer tasks than this succeed in a mode over 15 minutes …",
    )
    success_rate_min_tasks = models.PositiveIntegerField(
        default=20, help_text="… counting only once at least this many have finished."
    )
    webhooks_disabled_count = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Alert when this many webhook endpoints were disabled within an hour.",
    )
    ledger_check_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(5)],
        help_text="How often the ledger is audited for drift (it reads every entry).",
    )
    email_staff = models.BooleanField(
        default=True, help_text="E-mail every active staff user when an alert opens or resolves."
    )
    #: A Slack-compatible incoming webhook URL, encrypted (``apps.core.crypto``); write-only.
    slack_webhook_url_encrypted = models.TextField(blank=True)
    #: When the ledger was last audited and how many drifts it found then.
    ledger_checked_at = models.DateTimeField(null=True, blank=True)
    ledger_drifts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "alert settings"
        verbose_name_plural = "alert settings"

    def __str__(self) -> str:
        return "Alert settings"


class Alert(models.Model):
    """One condition that was true for a while. Open while ``resolved_at`` is empty; at most
    one open alert per ``key``, so a condition that stays true is reported once."""

    key = models.CharField(max_length=120)
    kind = models.CharField(max_length=40, db_index=True)
    title = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    opened_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    #: Where the opening and the resolution were told ("email", "slack"), or why not.
    notified = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-opened_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=("key",),
                condition=models.Q(resolved_at__isnull=True),
                name="monitoring_one_open_alert_per_key",
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class ConditionState(models.Model):
    """What the evaluator saw of one condition over its last checks, for flap damping.

    A row exists while the condition holds or its alert is open: whether the last counted check
    found it (``firing``), for how many checks in a row (``checks``) and since when. An alert
    opens once the condition held ``ALERT_OPEN_AFTER_CHECKS`` checks (and at least
    ``ALERT_OPEN_AFTER_SECONDS``) and resolves once it was clear ``ALERT_RESOLVE_AFTER_CHECKS``
    checks (and ``ALERT_RESOLVE_AFTER_SECONDS``), so a condition that comes and goes with every
    check is not told each time. ``checked_at`` is the compare-and-set token: two evaluators
    that read the same row count one check between them, not two.
    """

    key = models.CharField(max_length=120, unique=True)
    firing = models.BooleanField()
    checks = models.PositiveIntegerField(default=1)
    since = models.DateTimeField()
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        state = "firing" if self.firing else "clear"
        return f"{self.key}: {state} for {self.checks} check(s)"
