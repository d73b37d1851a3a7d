"""Stored buttons speak domain words: each ``Task.buttons`` entry's ``customId`` key becomes
``custom_id`` (issue 12). The dialects rename it back to their wire keys on the way out.

The discord engine's own copy of the message's buttons (``engine_state["buttons"]`` of its
tasks) follows: a follow-up pressed after the deploy reads them by ``custom_id``. The mjproxy
engine's copy is the upstream's task JSON and keeps the upstream's ``customId``.

PostgreSQL's jsonb orders an object's keys by length, then bytes: ``custom_id`` sits where
``customId`` sat (the longest key of an entry), so the mj-proxy answer, which renames the key in
its place, is the same bytes as before. Rows are read in batches; rows without buttons are
skipped.
"""

from typing import Any

from django.db import migrations

BATCH = 1000
OURS, THEIRS = "custom_id", "customId"


def _renamed(buttons: Any, old: str, new: str) -> Any:
    """``buttons`` with ``old`` renamed to ``new`` in place, or ``None`` when nothing changes."""
    if not isinstance(buttons, list):
        return None
    changed = False
    out = []
    for button in buttons:
        if isinstance(button, dict) and old in button and new not in button:
            button = {(new if key == old else key): value for key, value in button.items()}
            changed = True
        out.append(button)
    return out if changed else None


def _rename(apps: Any, old: str, new: str) -> None:
    Task = apps.get_model("tasks", "Task")
    pending: list[Any] = []

    def flush() -> None:
        if pending:
            Task.objects.bulk_update(pending, ["buttons", "engine_state"])
            pending.clear()

    rows = (
        Task.objects.exclude(buttons=[])
        .order_by("pk")
        .only("pk", "engine", "buttons", "engine_state")
        .iterator(chunk_size=BATCH)
    )
    for task in rows:
        buttons = _renamed(task.buttons, old, new)
        state = task.engine_state if isinstance(task.engine_state, dict) else {}
        theirs = _renamed(state.get("buttons"), old, new) if task.engine == "discord" else None
        if buttons is None and theirs is None:
            continue
        if buttons is not None:
            task.buttons = buttons
        if theirs is not None:
            task.engine_state = {**state, "buttons": theirs}
        pending.append(task)
        if len(pending) >= BATCH:
            flush()
    flush()


def forwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, THEIRS, OURS)


def backwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, OURS, THEIRS)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0003_admin_indexes"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=True),
    ]
