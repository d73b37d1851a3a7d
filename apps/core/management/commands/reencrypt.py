"""reencrypt: rewrite every stored credential under the current encryption key.

Run after putting a new key first in FIELD_ENCRYPTION_KEYS (or setting it for the first time,
or rotating SECRET_KEY with the old one in SECRET_KEY_FALLBACKS); once it reports nothing left
on an old key, the old keys can be removed. Safe to run again and while the product runs: each
value is replaced only if it is still the one that was read.

Covered: every column of ``apps.core.crypto.encrypted_columns()`` (upstream account secrets,
webhook signing secrets) and the MFA secrets allauth keeps inside ``Authenticator.data`` when
the MFA adapter encrypts them (values carrying the adapter's ``PREFIX``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from apps.core.crypto import encrypted_columns, token_is_current, token_reencrypt

BATCH = 500


@dataclass
class _Counts:
    current: int = 0
    reencrypted: int = 0
    changed: int = 0
    unreadable: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = "Re-encrypt every stored credential with the first key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be re-encrypted."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run: bool = options["dry_run"]
        unreadable = 0
        for label, run in self._sources():
            counts = _Counts()
            run(counts, dry_run)
            for where in counts.unreadable:
                self.stderr.write(f"{label}: {where} cannot be decrypted with any key")
            unreadable += len(counts.unreadable)
            verb = "to re-encrypt" if dry_run else "re-encrypted"
            self.stdout.write(
                f"{label}: {counts.reencrypted} {verb}, {counts.current} already current"
                + (f", {counts.changed} changed meanwhile" if counts.changed else "")
                + (f", {len(counts.unreadable)} UNREADABLE" if counts.unreadable else "")
            )
        if unreadable:
            raise CommandError(
                f"{unreadable} value(s) could not be decrypted with any configured key; "
                "they were left as they are. Add the key they were written with and run again."
            )

    def _sources(self) -> Iterator[tuple[str, Callable[[_Counts, bool], None]]]:
        quote = connection.ops.quote_name
        for model, column_field in encrypted_columns():
            label = f"{model._meta.label}.{column_field.name}"
            assert model._meta.pk is not None
            table = quote(model._meta.db_table)
            column = quote(str(column_field.column))
            pk = quote(str(model._meta.pk.column))
            yield label, partial(self._column, label=label, table=table, column=column, pk=pk)
        prefix = self._mfa_prefix()
        if prefix is not None:
            yield "mfa.Authenticator.data", partial(self._mfa, prefix=prefix)

    def _progress(self, label: str, counts: _Counts) -> None:
        done = counts.current + counts.reencrypted + counts.changed + len(counts.unreadable)
        self.stdout.write(f"{label}: {done} read…", ending="\r")
        self.stdout.flush()

    def _column(
        self, counts: _Counts, dry_run: bool, *, label: str, table: str, column: str, pk: str
    ) -> None:
        last: Any = None
        while True:
            # Keyset pagination on the primary key: no offsets, no long transaction.
            after = f" AND {pk} > %s" if last is not None else ""
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {pk}, {column} FROM {table} WHERE {column} <> ''{after} "  # noqa: S608 - quoted names
                    f"ORDER BY {pk} LIMIT {BATCH}",
                    [last] if last is not None else [],
                )
                rows = cursor.fetchall()
            if not rows:
                return
            for row_pk, token in rows:
                last = row_pk
                if token_is_current(token):
                    counts.current += 1
                    continue
                try:
                    fresh = token_reencrypt(token)
                except ValueError:
                    counts.unreadable.append(f"row {row_pk}")
                    continue
                if dry_run:
                    counts.reencrypted += 1
                    continue
                with connection.cursor() as cursor:
                    # Compare-and-set: a value rewritten meanwhile is already current.
                    cursor.execute(
                        f"UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = %s",  # noqa: S608 - quoted names
                        [fresh, row_pk, token],
                    )
                    if cursor.rowcount == 1:
                        counts.reencrypted += 1
                    else:
                        counts.changed += 1
            self._progress(label, counts)

    @staticmethod
    def _mfa_prefix() -> str | None:
        """The MFA adapter's marker of encrypted values, or None when MFA secrets are clear."""
        if not apps.is_installed("allauth.mfa"):
            return None
        # Lazy: allauth.mfa is an optional app here; its adapter exists only when installed.
        from allauth.mfa.adapter import get_adapter

        prefix = getattr(get_adapter(), "PREFIX", None)
        return prefix if isinstance(prefix, str) and prefix else None

    def _mfa(self, counts: _Counts, dry_run: bool, *, prefix: str) -> None:
        authenticator = apps.get_model("mfa", "Authenticator")
        for pk in authenticator.objects.order_by("pk").values_list("pk", flat=True).iterator():
            with transaction.atomic():
                # Locked, so allauth cannot rewrite the row between our read and our write.
                row = authenticator.objects.select_for_update().filter(pk=pk).first()
                if row is None:
                    continue
                before = counts.reencrypted
                data = _rewrap(row.data, prefix, counts, f"authenticator {pk}")
                if counts.reencrypted != before and not dry_run:
                    authenticator.objects.filter(pk=pk).update(data=data)
            if pk % BATCH == 0:
                self._progress("mfa.Authenticator.data", counts)


def _rewrap(value: Any, prefix: str, counts: _Counts, where: str) -> Any:
    """``value`` (allauth's JSON) with every ``prefix``-marked token under the current key."""
    if isinstance(value, dict):
        return {key: _rewrap(item, prefix, counts, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrap(item, prefix, counts, where) for item in value]
    if not (isinstance(value, str) and value.startswith(prefix)):
        return value
    token = value[len(prefix) :]
    if token_is_current(token):
        counts.current += 1
        return value
    try:
        fresh = prefix + token_reencrypt(token)
    except ValueError:
        counts.unreadable.append(where)
        return value
    counts.reencrypted += 1
    return fresh
