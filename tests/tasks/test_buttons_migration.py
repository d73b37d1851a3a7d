"""The data migration that renames the stored buttons' ``customId`` key to ``custom_id``."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from apps.tasks.enums import Action, Status
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db

migration = importlib.import_module("apps.tasks.migrations.0004_buttons_custom_id_key")


def _historical_apps() -> Any:
    """The models as the migration sees them (the state right before it)."""
    return MigrationLoader(connection).project_state(("tasks", "0003_admin_indexes")).apps


OLD_U1 = {"customId": "MJ::JOB::upsample::1::h", "emoji": "", "label": "U1", "type": 2, "style": 2}
NEW_U1 = {"custom_id": "MJ::JOB::upsample::1::h", "emoji": "", "label": "U1", "type": 2, "style": 2}


def _task(organization: Any, **fields: Any) -> Task:
    return Task.objects.create(
        organization=organization, action=Action.IMAGINE, status=Status.SUCCESS, **fields
    )


def test_forwards_renames_the_key_in_place_and_backwards_restores_it(organization):
    odd = {"label": "Odd", "customId": "MJ::BOOKMARK::h", "extra": {"k": [1]}}
    grid = _task(organization, buttons=[OLD_U1, odd, "not a dict"])
    empty = _task(organization, buttons=[])
    before = Task.objects.get(pk=grid.pk).buttons

    migration.forwards(_historical_apps(), None)
    grid.refresh_from_db()
    assert grid.buttons == [
        NEW_U1,
        {"label": "Odd", "custom_id": "MJ::BOOKMARK::h", "extra": {"k": [1]}},
        "not a dict",
    ]
    assert Task.objects.get(pk=empty.pk).buttons == []

    migration.forwards(_historical_apps(), None)  # a second run changes nothing
    grid.refresh_from_db()
    assert grid.buttons[0] == NEW_U1 and grid.buttons[1]["custom_id"] == "MJ::BOOKMARK::h"

    migration.backwards(_historical_apps(), None)
    grid.refresh_from_db()
    assert grid.buttons == before == [OLD_U1, odd, "not a dict"]
    assert Task.objects.get(pk=empty.pk).buttons == []


def test_the_discord_engines_own_buttons_follow_but_an_upstreams_keep_their_key(organization):
    theirs = [{"customId": "MJ::JOB::upsample::1::upstream", "label": "U1"}]
    discord = _task(
        organization,
        engine="discord",
        buttons=[OLD_U1],
        engine_state={"message_id": "9", "buttons": [dict(OLD_U1)], "job_hash": "h"},
    )
    proxied = _task(
        organization, engine="mjproxy", buttons=[OLD_U1], engine_state={"buttons": theirs}
    )

    migration.forwards(_historical_apps(), None)
    discord.refresh_from_db()
    proxied.refresh_from_db()
    assert discord.buttons == [NEW_U1]
    assert discord.engine_state == {"message_id": "9", "buttons": [NEW_U1], "job_hash": "h"}
    assert proxied.buttons == [NEW_U1]
    assert proxied.engine_state == {"buttons": theirs}

    migration.backwards(_historical_apps(), None)
    discord.refresh_from_db()
    proxied.refresh_from_db()
    assert discord.buttons == [OLD_U1]
    assert discord.engine_state == {"message_id": "9", "buttons": [OLD_U1], "job_hash": "h"}
    assert proxied.engine_state == {"buttons": theirs}


def test_it_works_in_batches(organization, monkeypatch):
    monkeypatch.setattr(migration, "BATCH", 2)
    tasks = [_task(organization, buttons=[dict(OLD_U1)]) for _ in range(5)]
    migration.forwards(_historical_apps(), None)
    assert [Task.objects.get(pk=t.pk).buttons for t in tasks] == [[NEW_U1]] * 5
