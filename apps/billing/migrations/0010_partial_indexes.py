"""Fewer indexes written by each ledger entry (issue 15, P1: every submit writes a hold).

A ledger row was written into twelve indexes. Dropped: the organization's own index (the
unique key and ``ledger_org_recent`` both start with the organization and serve every query
of it) and the ``…_like`` copies (varchar_pattern_ops, for ``LIKE 'abc%'``) of kind, Stripe
object id and task id, which no query uses (Django does not track them in its state). The
operator's index holds only the rows that have one (an operator's adjustment): every query of
it compares it with a value, which excludes NULL.

The operator's partial index is built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL
(``AddIndexWithoutLock``) before the full one is dropped, so the ledger keeps taking holds and
captures meanwhile. Not atomic, as ``CONCURRENTLY`` requires.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from apps.core.migration_ops import AddIndexWithoutLock

#: Created by Django for indexed varchar columns on PostgreSQL (names from the 0001 schema).
_LIKE_INDEXES = [
    ("billing_ledgerentry_kind_67bca6de_like", "kind"),
    ("billing_ledgerentry_stripe_object_id_f77c6298_like", "stripe_object_id"),
    ("billing_ledgerentry_task_id_edd7e9cb_like", "task_id"),
]


def _drop_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, _ in _LIKE_INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def _create_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in _LIKE_INDEXES:
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON billing_ledgerentry"
                f" ({column} varchar_pattern_ops)"
            )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0004_own_accounts_tier"),
        ("billing", "0009_ledger_task_hold_function"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexWithoutLock(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("operator__isnull", False)),
                fields=["operator"],
                name="ledger_operator",
            ),
        ),
        migrations.RunPython(_drop_like_indexes, _create_like_indexes, elidable=True),
        migrations.AlterField(
            model_name="ledgerentry",
            name="operator",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="ledger_entries",
                to="accounts.organization",
            ),
        ),
    ]
