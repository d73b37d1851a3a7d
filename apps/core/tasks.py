"""Celery entry points for shared plumbing. Thin: one service call each."""

from __future__ import annotations

from celery import shared_task

from .embedded_broker import embedded_broker_compact


@shared_task(name="core.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records() -> None:
    # Imported here: the idempotency module is the API's (it brings DRF), and a worker that
    # imported it at boot would carry DRF in every pool process (issue 15, P6).
    from .idempotency import idempotency_records_purge

    idempotency_records_purge()


@shared_task(name="core.compact_embedded_broker", ignore_result=True)
def compact_embedded_broker() -> None:
    embedded_broker_compact()
