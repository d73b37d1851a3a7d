"""Shared model plumbing."""

from __future__ import annotations

from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class IdempotencyRecord(models.Model):
    """The first response to a POST that carried an ``Idempotency-Key`` (SPEC §6.3).

    Keyed per API key, so two keys (or two tenants) can never see each other's responses. The
    unique constraint, not a lookup, decides which of two concurrent requests runs: the loser
    of the insert gets 409 while the winner is in flight and the stored response afterwards.
    ``fingerprint`` is a hash of the method, path and body; a reuse with another request is 422.
    Rows expire after ``IDEMPOTENCY_TTL`` and are then treated as absent and purged.
    """

    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"

    api_key = models.ForeignKey(
        "api_keys.ApiKey", on_delete=models.CASCADE, related_name="idempotency_records"
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=[(IN_FLIGHT, "In flight"), (COMPLETED, "Completed")]
    )
    locked_at = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_content_type = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_unique_per_key")
        ]
        indexes = [models.Index(fields=["api_key", "expires_at"], name="idempotency_expiry")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"
