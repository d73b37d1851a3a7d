from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps as django_apps

from apps.accounts.models import MembershipTier, Organization
from apps.accounts.selectors import tier_get, tier_get_default
from apps.core.errors import NotFound
from tests import reference_data

ROOT = Path(__file__).resolve().parents[2]


def _rows() -> list[tuple[str, str, int, bool]]:
    return list(
        MembershipTier.objects.order_by("sort_order").values_list(
            "code", "name", "max_unfinished_tasks", "is_default"
        )
    )


@pytest.mark.slow
def test_migrate_on_a_fresh_database_creates_the_three_tiers(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(MJGATE_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings.local")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        rows = db.execute(
            "SELECT code, name, max_unfinished_tasks, is_default FROM accounts_membershiptier "
            "ORDER BY sort_order"
        ).fetchall()
    assert rows == [("FREE", "Free", 3, 1), ("VIP", "VIP", 20, 0), ("PREMIUM", "Premium", 50, 0)]


def test_tests_restore_the_same_rows_the_migration_creates():
    # conftest puts these back after a flush; they must never drift from the migration.
    migration = importlib.import_module("apps.accounts.migrations.0002_seed_tiers")
    assert reference_data.TIERS == migration.TIERS


@pytest.mark.django_db
def test_test_database_has_the_three_tiers():
    assert _rows() == [
        ("FREE", "Free", 3, True),
        ("VIP", "VIP", 20, False),
        ("PREMIUM", "Premium", 50, False),
    ]


@pytest.mark.django_db
def test_the_data_migration_fills_an_empty_table_and_is_idempotent():
    assert not Organization.objects.exists()
    MembershipTier.objects.all().delete()
    migration = importlib.import_module("apps.accounts.migrations.0002_seed_tiers")
    migration.seed(django_apps, None)
    migration.seed(django_apps, None)
    assert _rows() == [
        ("FREE", "Free", 3, True),
        ("VIP", "VIP", 20, False),
        ("PREMIUM", "Premium", 50, False),
    ]


@pytest.mark.django_db
def test_default_tier_is_free():
    assert tier_get_default().code == "FREE"


@pytest.mark.django_db
def test_tier_lookup_ignores_case():
    assert tier_get(code="premium").max_unfinished_tasks == 50


@pytest.mark.django_db
def test_unknown_tier_names_the_valid_ones():
    with pytest.raises(NotFound) as excinfo:
        tier_get(code="GOLD")
    assert (
        excinfo.value.message == "Unknown membership tier 'GOLD'. Use one of: FREE, VIP, PREMIUM."
    )


@pytest.mark.django_db
def test_operators_can_edit_a_tier_row():
    MembershipTier.objects.filter(code="FREE").update(max_unfinished_tasks=5)
    assert tier_get(code="FREE").max_unfinished_tasks == 5
