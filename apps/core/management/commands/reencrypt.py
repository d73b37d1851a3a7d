"""reencrypt: rewrite every stored credential under the current encryption key.

Run after putting a new key first in FIELD_ENCRYPTION_KEYS (or setting it for the first time,
or rotating SECRET_KEY with the old one in SECRET_KEY_FALLBACKS); once it reports nothing left
on an old key, the old keys can be removed. Safe to run again and while the product runs: each
value is replaced only if it is still the one that was read.

Covered: every column of ``apps.core.crypto.encrypted_columns()`` (upstream account secrets,
webhook signing secrets), the stored responses of idempotent requests
(``IdempotencyRecord.response_body``: a Fernet token as ASCII bytes, ``apps.core.idempotency``;
a body stored in clear before responses were sealed is left as it is) and the MFA secrets
allauth keeps inside ``Authenticator.data`` when the MFA adapter encrypts them (values carrying
the adapter's ``PREFIX``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from apps.core.crypto import encrypted_columns, token_is_current, token_reencrypt
from apps.core.models import IdempotencyRecord

BATCH = 500
#: The shape of a Fernet token (url-safe base64); a body kept in clear is not one.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]+=*")


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
        # Bytes, not text: the sealed body of an idempotent request's stored response.
        body_field = IdempotencyRecord._meta.get_field("response_body")
        assert IdempotencyRecord._meta.pk is not None
        label = f"{IdempotencyRecord._meta.label}.{body_field.name}"
        yield (
            label,
            partial(
                self._column,
                label=label,
                table=quote(IdempotencyRecord._meta.db_table),
                column=quote(str(body_field.column)),
                pk=quote(str(IdempotencyRecord._meta.pk.column)),
                binary=True,
            ),
        )
        prefix = self._mfa_prefix()
        if prefix is not None:
            yield "mfa.Authenticator.data", partial(self._mfa, prefix=prefix)

    def _progress(self, label: str, counts: _Counts) -> None:
        done = counts.current + counts.reencrypted + counts.changed + len(counts.unreadable)
        self.stdout.write(f"{label}: {done} read…", ending="\r")
        self.stdout.flush()

    def _column(
        self,
        counts: _Counts,
        dry_run: bool,
        *,
        label: str,
        table: str,
        column: str,
        pk: str,
        binary: bool = False,
    ) -> None:
        last: Any = None
        while True:
            # Keyset pagination on the primary key: no offsets, no long transaction.
            after = f" AND {pk} > %s" if last is not None else ""
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {pk}, {column} FROM {table} "  # noqa: S608 - quoted names
                    f"WHERE {column} IS NOT NULL AND {column} <> %s{after} "
                    f"ORDER BY {pk} LIMIT {BATCH}",
                    [b"" if binary else "", *([last] if last is not None else [])],
                )
                rows = cursor.fetchall()
            if not rows:
                return
            for row_pk, stored in rows:
                last = row_pk
                if binary:
                    stored = bytes(stored)
                    token = _sealed_token(stored)
                    if token is None:
                        continue  # stored in clear: nothing to re-encrypt
                else:
                    token = stored
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
                        [fresh.encode("ascii") if binary else fresh, row_pk, stored],
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


def _sealed_token(stored: bytes) -> str | None:
    """The Fernet token a sealed body is, or None for a body kept in clear (a token is
    url-safe base64 of a version byte 0x80 and what follows)."""
    if not _TOKEN.fullmatch(stored):
        return None
    try:
        raw = base64.urlsafe_b64decode(stored)
    except (binascii.Error, ValueError):
        return None
    return stored.decode("ascii") if raw[:1] == b"\x80" else None


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
