"""The audit log: who did what to which object, when, and what it looked like before and after."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    # Bulk writes would bypass ``save``'s guard; the log is append-only through every path
    # the ORM offers (raw SQL is out of scope).
    def update(self, **kwargs: Any) -> NoReturn:
        raise TypeError("Audit entries are append-only: they are never updated.")

    def delete(self) -> NoReturn:
        raise TypeError("Audit entries are append-only: they are never deleted.")


class AuditEntry(models.Model):
    """One operator action. Append-only: written by ``audit_record``, never changed or deleted.

    ``actor_label`` keeps the operator's e-mail as it was, so the trail still says who acted
    after the user is renamed or removed (``actor`` then becomes NULL). ``before``/``after``
    hold only the fields that changed, with credentials replaced by a marker: the log is shown
    in the admin and must never become a way to read a secret. ``dedupe_key`` makes replaying
    the same action (a form submitted twice, an idempotent ledger call) record once.
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=100, blank=True, help_text="app_label.model")
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ("-id",)
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        permissions = [("view_stats", "Can view the operator stats page")]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object"),
            models.Index(fields=["actor", "-id"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_label or 'system'} {self.action} {self.object_type} {self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise TypeError("Audit entries are append-only: they are never updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("Audit entries are append-only: they are never deleted.")
