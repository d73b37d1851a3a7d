"""``manage.py discord_gateway``: hold the Discord WebSockets of the discord accounts.

Run one or more (on one or several machines); they share the accounts through leases in
PostgreSQL. The bot's news reaches tasks through the lifecycle's ``task_apply_update``; with
``--poll-only`` the gateway only records it in its own tables, where the engine's poll reads it.

The command lives on the tasks side because it is an edge: it wires the engine's gateway (which
knows nothing of tasks) to the lifecycle, so no module under ``apps/engines`` imports the
lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.engines.base import JobUpdate
from apps.engines.discord.gateway import GatewayService, Sink
from apps.tasks import lifecycle

logger = logging.getLogger(__name__)


def _lifecycle_sink() -> Sink | None:
    apply = getattr(lifecycle, "task_apply_update", None)
    if apply is None:
        return None

    def sink(update: JobUpdate) -> None:
        apply(update=update)

    return sink


def _recorded_only(update: JobUpdate) -> None:
    logger.debug(
        "discord job %s: %s (left for the poll)", update.upstream_job_id, update.result.status
    )


class Command(BaseCommand):
    help = "Hold the gateway WebSockets of the discord engine's accounts (leased across processes)."

    def add_arguments(self, parser: CommandParser) -> None:
        # Unique per process even where two containers share the host's name and both run as
        # pid 1 (host networking): two gateways with one name would both pass a lease's check.
        parser.add_argument(
            "--holder", default=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        parser.add_argument("--ttl", type=float, default=30.0, help="lease lifetime, seconds")
        parser.add_argument("--renew-every", type=float, default=10.0, help="seconds")
        parser.add_argument("--account", type=int, action="append", help="only these account ids")
        parser.add_argument(
            "--poll-only",
            action="store_true",
            help="record the bot's news for the engine's poll instead of pushing it to tasks",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sink = _recorded_only if options["poll_only"] else _lifecycle_sink()
        if sink is None:
            raise CommandError(
                "This mjgate has no apps.tasks.lifecycle.task_apply_update, so gateway news "
                "cannot be pushed to tasks. Run with --poll-only (the engine's poll reads what "
                "the gateway records) or upgrade."
            )
        service = GatewayService(
            holder=options["holder"],
            sink=sink,
            ttl=options["ttl"],
            renew_every=options["renew_every"],
            account_ids=set(options["account"]) if options["account"] else None,
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, service.stop)
            self.stdout.write(f"discord gateway {options['holder']} started", ending="\n")
            self.stdout.flush()
            await service.run()

        asyncio.run(main())
