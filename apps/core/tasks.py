"""Celery entry points for shared plumbing. Thin: one service call each."""

from __future__ import annotations

from celery import shared_task

from .idempotency import idempotency_records_purge


@shared_task(name="core.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records() -> None:
    idempotency_records_purge()
