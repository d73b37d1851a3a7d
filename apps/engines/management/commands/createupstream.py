"""createupstream --engine sandbox|mjproxy --name N --modes FAST,RELAX,TURBO (SPEC §11)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import ServiceError
from apps.engines.services import upstream_account_create


class Command(BaseCommand):
    help = "Create an upstream account that tasks can run on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--engine", required=True, help="sandbox or mjproxy")
        parser.add_argument("--name", required=True)
        parser.add_argument("--modes", default="FAST,RELAX,TURBO")
        parser.add_argument("--concurrency", type=int, default=3)
        parser.add_argument("--queue-size", type=int, default=10)
        parser.add_argument(
            "--run-timeout",
            type=int,
            default=None,
            help="Seconds (default TASK_DEFAULT_RUN_TIMEOUT).",
        )
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Engine option, repeatable: duration=5, fail_rate=0.1, stall=true, "
            "base_url=…, secret=… (secrets are stored encrypted).",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        engine_options: dict[str, str] = {}
        for item in options["option"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--option must be KEY=VALUE, got '{item}'.")
            engine_options[key.strip()] = value
        try:
            account = upstream_account_create(
                engine=options["engine"],
                name=options["name"],
                modes=[m for m in options["modes"].split(",") if m.strip()],
                concurrency=options["concurrency"],
                queue_size=options["queue_size"],
                run_timeout_seconds=options["run_timeout"],
                options=engine_options,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "id": account.pk,
                        "name": account.name,
                        "engine": account.engine,
                        "modes": account.modes,
                        "concurrency": account.concurrency,
                        "queue_size": account.queue_size,
                        "run_timeout_seconds": account.run_timeout_seconds,
                        "options": account.options,
                        # Which credentials were stored, never their values.
                        "secrets": sorted(account.secrets),
                    }
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Created upstream account {account.name} (id {account.pk}, engine "
                f"{account.engine}, modes {','.join(account.modes)}, "
                f"concurrency {account.concurrency})."
            )
        )
