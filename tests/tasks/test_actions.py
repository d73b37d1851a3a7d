"""The table of actions is complete and self-consistent; the dialects' names all land in it.

Pure: no database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.protocols.mjproxy.actions import CHANGE_ACTIONS, SIMPLE_CHANGE_LETTERS
from apps.protocols.ttapi.actions import TTAPI_NAMES, ttapi_names
from apps.tasks.actions import (
    ACTIONS,
    NEW_TASK_ACTIONS,
    PRESSES,
    Capability,
    PressSpec,
    action_spec,
    label_key,
    result_button_set,
)
from apps.tasks.buttons import buttons_for, resolve_alias, resolve_custom_id
from apps.tasks.enums import Action
from apps.tasks.errors import InputError

HASH = "3dbbd469-36af-4a0f-8f02-df6c579e7011"
ROOT = Path(__file__).resolve().parents[2]


def test_every_action_has_exactly_one_row() -> None:
    assert set(ACTIONS) == set(Action.values)
    for action, spec in ACTIONS.items():
        assert spec.action == action
        assert spec.price_key in Action.values
        assert isinstance(spec.capability, Capability)


def test_only_describe_and_shorten_list_prompts() -> None:
    assert {a for a, spec in ACTIONS.items() if spec.lists_prompts} == {
        Action.DESCRIBE,
        Action.SHORTEN,
    }


def test_new_task_actions_are_the_rows_with_inputs() -> None:
    assert NEW_TASK_ACTIONS == (
        Action.IMAGINE,
        Action.DESCRIBE,
        Action.BLEND,
        Action.SHORTEN,
        Action.SWAP_FACE,
        Action.VIDEO,
        Action.EDIT,
        Action.RETEXTURE,
    )
    for action in NEW_TASK_ACTIONS:
        inputs = action_spec(action).inputs
        assert inputs is not None
        assert inputs.prompt or inputs.max_images > 0


def test_every_press_belongs_to_the_row_of_the_action_it_starts() -> None:
    for key, press in PRESSES.items():
        assert press.key == key
        assert press in action_spec(press.action).presses
        assert press.names, key


def _instances(press: PressSpec) -> list[int | None]:
    return list(press.indexes) if press.indexes is not None else [None]


@pytest.mark.parametrize("key", sorted(k for k, p in PRESSES.items() if p.emits))
def test_every_emitted_id_round_trips(key: str) -> None:
    press = PRESSES[key]
    for index in _instances(press):
        custom_id = press.custom_id(job_hash=HASH, index=index)
        resolved = resolve_custom_id(custom_id)
        assert (resolved.press, resolved.index, resolved.custom_id) == (press, index, custom_id)
        assert resolved.action == press.action
        assert resolved.requires_modal == (press.modal is not None)
        assert resolved.job_hash == (HASH if "{hash}" in press.emits else None)


@pytest.mark.parametrize("key", sorted(k for k, p in PRESSES.items() if p.indexes))
def test_a_number_outside_the_button_is_refused(key: str) -> None:
    press = PRESSES[key]
    assert press.indexes is not None
    custom_id = press.custom_id(job_hash=HASH, index=max(press.indexes) + 1)
    with pytest.raises(InputError) as info:
        resolve_custom_id(custom_id)
    assert info.value.field == "button"
    assert press.index_range in info.value.message


def test_only_one_pattern_matches_each_emitted_id() -> None:
    for press in PRESSES.values():
        if not press.emits:
            continue
        for index in _instances(press):
            custom_id = press.custom_id(job_hash=HASH, index=index)
            assert [p.key for p in PRESSES.values() if p.pattern.match(custom_id)] == [press.key]


@pytest.mark.parametrize("action", sorted(Action.values))
@pytest.mark.parametrize("is_grid", [True, False])
def test_result_buttons_are_rows_of_the_table_and_names_are_unambiguous(
    action: str, is_grid: bool
) -> None:
    buttons = buttons_for(action, job_hash=HASH, is_grid=is_grid)
    assert [
        (resolve_custom_id(b.custom_id).press, resolve_custom_id(b.custom_id).index)
        for b in buttons
    ] == list(result_button_set(action, is_grid=is_grid))
    for button in buttons:
        pressed = resolve_custom_id(button.custom_id)
        assert pressed.press is not None
        # Each of our names, and each TTAPI name, designates exactly this button.
        for name in (
            *pressed.press.all_names(pressed.index),
            *ttapi_names(pressed.press, pressed.index),
        ):
            assert resolve_alias(name, available=buttons, extra_names=ttapi_names) == button


def test_every_ttapi_name_maps_to_a_row_and_every_row_has_one() -> None:
    assert set(TTAPI_NAMES) == set(PRESSES)
    for key, names in TTAPI_NAMES.items():
        assert names, key
        numbered = PRESSES[key].indexes is not None
        assert all(("{n}" in name) == numbered for name in names[:1]), key


def test_every_mjproxy_change_name_maps_to_a_row() -> None:
    for key, numbered in (*CHANGE_ACTIONS.values(), *SIMPLE_CHANGE_LETTERS.values()):
        assert key in PRESSES
        assert (PRESSES[key].indexes is not None) == numbered


def test_native_names_never_collide_across_kinds_of_one_result() -> None:
    for is_grid in (True, False):
        for action in Action.values:
            seen: dict[str, str] = {}
            for press, index in result_button_set(action, is_grid=is_grid):
                for name in press.all_names(index):
                    owner = seen.setdefault(label_key(name), f"{press.key}:{index}")
                    # Reroll and "describe again" share REROLL; they never sit on one result.
                    assert owner == f"{press.key}:{index}", (name, owner, press.key)


# --- no dialect words in the domain ----------------------------------------------------------

#: Request and response words of the compatible dialects (mj-proxy, TTAPI).
WIRE_WORDS = (
    "customId",
    "base64Array",
    "notifyHook",
    "maskBase64",
    "sourceBase64",
    "targetBase64",
    "hookUrl",
    "imgBase64Array",
    "jobId",
    "outpaint_",
    "upscale_subtle",
    "upscale_creative",
    "zoom_out_",
)


def test_no_dialect_field_or_action_name_in_the_task_domain_or_billing() -> None:
    found = []
    for folder in ("apps/tasks", "apps/billing"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            relative = str(path.relative_to(ROOT))
            for word in WIRE_WORDS:
                if word in text:
                    found.append((relative, word))
    assert found == []
