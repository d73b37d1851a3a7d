"""Celery entry points of the discord engine. Thin: one call each."""

from __future__ import annotations

from celery import shared_task

from .retention import discord_jobs_purge

PURGE_TASK = "discord.purge_jobs"


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_jobs() -> None:
    discord_jobs_purge()
