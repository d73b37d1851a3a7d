"""Celery entry point: the alert evaluator, run by beat every minute."""

from __future__ import annotations

from celery import shared_task

from .services import alerts_evaluate

EVALUATE = "monitoring.evaluate_alerts"


@shared_task(name=EVALUATE, ignore_result=True)
def evaluate_alerts() -> None:
    alerts_evaluate()
