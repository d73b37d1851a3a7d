"""``manage.py ledger_check``: verify the token ledger (SPEC §3, §11). Exits 1 on any drift."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.billing.audit import ledger_audit


class Command(BaseCommand):
    help = (
        "Recompute every organization's balance from its ledger entries, check each entry's "
        "running balance, that every finished task was captured or released exactly once and "
        "that each organization's unfinished-task counter (the tier limit's) matches a COUNT. "
        "Exits 1 and lists each drift if anything is off."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=5000,
            help="Rows read per query (default 5000).",
        )
        parser.add_argument(
            "--max-drifts",
            type=int,
            default=1000,
            help="List at most this many drifts (all are counted).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        chunk_size = options["chunk_size"]
        if chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1.")
        verbosity = options["verbosity"]
        last_report = [0.0]

        def progress(phase: str, done: int, total: int) -> None:
            # Only ledgers that take more than one chunk are worth a progress line.
            if verbosity < 1 or total <= chunk_size:
                return
            now = time.monotonic()
            if done < total and now - last_report[0] < 1.0:
                return
            last_report[0] = now
            self.stderr.write(f"  {phase}: {done:,}/{total:,} ({done * 100 // total}%)")

        report = ledger_audit(
            chunk_size=chunk_size, progress=progress, max_drifts=options["max_drifts"]
        )
        if report.ok:
            self.stdout.write(
                self.style.SUCCESS(
                    f"ledger OK ({report.organizations} organizations, {report.entries} entries)"
                )
            )
            return
        self.stdout.write(
            f"ledger DRIFT: {report.drift_count} problem(s) in {report.organizations} "
            f"organizations, {report.entries} entries, {report.tasks} tasks:"
        )
        for drift in report.drifts:
            self.stdout.write(f"  - {drift}")
        if report.drift_count > len(report.drifts):
            self.stdout.write(f"  … and {report.drift_count - len(report.drifts)} more")
        raise CommandError(f"ledger_check found {report.drift_count} drift(s).", returncode=1)
