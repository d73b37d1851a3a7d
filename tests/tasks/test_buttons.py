"""Midjourney buttons, their ids and their names (SPEC §4.3): pure, no database.

TTAPI's names for the buttons belong to the TTAPI dialect (``apps.protocols.ttapi.actions``);
the cases that use them pass them in as a dialect does.
"""

from __future__ import annotations

import pytest

from apps.core.errors import ValidationFailed
from apps.protocols.ttapi.actions import ttapi_component_name, ttapi_components, ttapi_names
from apps.tasks.buttons import (
    Button,
    ButtonAction,
    buttons_for,
    friendly_name,
    resolve_alias,
    resolve_custom_id,
)
from apps.tasks.enums import Action

HASH = "3dbbd469-36af-4a0f-8f02-df6c579e7011"


def grid() -> list[Button]:
    return buttons_for(Action.IMAGINE, job_hash=HASH, is_grid=True)


def upscale() -> list[Button]:
    return buttons_for(Action.UPSCALE, job_hash=HASH, is_grid=False)


def describe() -> list[Button]:
    return buttons_for(Action.DESCRIBE, job_hash=HASH, is_grid=False)


def shorten() -> list[Button]:
    return buttons_for(Action.SHORTEN, job_hash=HASH, is_grid=False)


def every_button() -> list[Button]:
    return [*grid(), *upscale(), *describe(), *shorten(), *video()]


def video() -> list[Button]:
    return buttons_for(Action.VIDEO, job_hash=HASH, is_grid=False)


# --- buttons_for ---------------------------------------------------------------------------------


def test_grid_buttons_are_midjourneys_exactly() -> None:
    assert [b.as_dict() for b in grid()] == [
        {
            "custom_id": f"MJ::JOB::upsample::1::{HASH}",
            "emoji": "",
            "label": "U1",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::upsample::2::{HASH}",
            "emoji": "",
            "label": "U2",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::upsample::3::{HASH}",
            "emoji": "",
            "label": "U3",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::upsample::4::{HASH}",
            "emoji": "",
            "label": "U4",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::reroll::0::{HASH}::SOLO",
            "emoji": "🔄",
            "label": "",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::variation::1::{HASH}",
            "emoji": "",
            "label": "V1",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::variation::2::{HASH}",
            "emoji": "",
            "label": "V2",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::variation::3::{HASH}",
            "emoji": "",
            "label": "V3",
            "type": 2,
            "style": 2,
        },
        {
            "custom_id": f"MJ::JOB::variation::4::{HASH}",
            "emoji": "",
            "label": "V4",
            "type": 2,
            "style": 2,
        },
    ]


def test_upscale_buttons_are_midjourneys_exactly() -> None:
    assert [(b.custom_id, b.emoji, b.label, b.type, b.style) for b in upscale()] == [
        (f"MJ::JOB::upsample_v6_2x_subtle::1::{HASH}::SOLO", "", "Upscale (Subtle)", 2, 2),
        (f"MJ::JOB::upsample_v6_2x_creative::1::{HASH}::SOLO", "", "Upscale (Creative)", 2, 2),
        (f"MJ::JOB::low_variation::1::{HASH}::SOLO", "🪄", "Vary (Subtle)", 2, 2),
        (f"MJ::JOB::high_variation::1::{HASH}::SOLO", "🪄", "Vary (Strong)", 2, 2),
        (f"MJ::Inpaint::1::{HASH}::SOLO", "🖌️", "Vary (Region)", 2, 2),
        (f"MJ::Outpaint::50::1::{HASH}::SOLO", "🔍", "Zoom Out 2x", 2, 2),
        (f"MJ::Outpaint::75::1::{HASH}::SOLO", "🔍", "Zoom Out 1.5x", 2, 2),
        (f"MJ::CustomZoom::{HASH}", "🔍", "Custom Zoom", 2, 2),
        (f"MJ::JOB::pan_left::1::{HASH}::SOLO", "⬅️", "", 2, 2),
        (f"MJ::JOB::pan_right::1::{HASH}::SOLO", "➡️", "", 2, 2),
        (f"MJ::JOB::pan_up::1::{HASH}::SOLO", "⬆️", "", 2, 2),
        (f"MJ::JOB::pan_down::1::{HASH}::SOLO", "⬇️", "", 2, 2),
        (f"MJ::JOB::animate_high::1::{HASH}::SOLO", "🎞️", "Animate (High motion)", 2, 2),
        (f"MJ::JOB::animate_low::1::{HASH}::SOLO", "🎞️", "Animate (Low motion)", 2, 2),
        (f"MJ::JOB::reroll::0::{HASH}::SOLO", "🔄", "", 2, 2),
    ]


def test_describe_buttons() -> None:
    assert [(b.custom_id, b.emoji, b.label) for b in describe()] == [
        ("MJ::Job::PicReader::1", "1️⃣", ""),
        ("MJ::Job::PicReader::2", "2️⃣", ""),
        ("MJ::Job::PicReader::3", "3️⃣", ""),
        ("MJ::Job::PicReader::4", "4️⃣", ""),
        ("MJ::Picread::Retry", "🔄", ""),
    ]


def test_shorten_buttons() -> None:
    assert [(b.custom_id, b.emoji) for b in shorten()] == [
        ("MJ::Job::PromptAnalyzer::1", "1️⃣"),
        ("MJ::Job::PromptAnalyzer::2", "2️⃣"),
        ("MJ::Job::PromptAnalyzer::3", "3️⃣"),
        ("MJ::Job::PromptAnalyzer::4", "4️⃣"),
        ("MJ::Job::PromptAnalyzer::5", "5️⃣"),
    ]


def test_swap_face_has_no_buttons() -> None:
    assert buttons_for(Action.SWAP_FACE, job_hash=HASH, is_grid=False) == []


@pytest.mark.parametrize(
    "action",
    [Action.IMAGINE, Action.VARIATION, Action.REROLL, Action.BLEND, Action.ZOOM, Action.PAN],
)
def test_every_grid_producing_action_gets_grid_buttons(action: str) -> None:
    assert buttons_for(action, job_hash=HASH, is_grid=True) == grid()


def test_plain_strings_work_as_actions() -> None:
    assert buttons_for("UPSCALE", job_hash=HASH, is_grid=False) == upscale()


@pytest.mark.parametrize("bad_hash", ["", "a::b", "has space", "x:y"])
def test_a_hash_that_would_break_the_customid_is_a_programming_error(bad_hash: str) -> None:
    with pytest.raises(ValueError, match="cannot be embedded"):
        buttons_for(Action.IMAGINE, job_hash=bad_hash, is_grid=True)


def test_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown action 'PAINT'"):
        buttons_for("PAINT", job_hash=HASH, is_grid=True)


def test_button_dict_round_trip() -> None:
    for button in every_button():
        assert Button.from_dict(button.as_dict()) == button


def test_button_from_a_sparse_upstream_dict() -> None:
    assert Button.from_dict({"custom_id": "MJ::BOOKMARK::x"}) == Button("MJ::BOOKMARK::x", "", "")


# --- resolve_custom_id -----------------------------------------------------------------------

EXPECTED_ACTIONS: list[tuple[str, ButtonAction]] = [
    *(
        (
            f"MJ::JOB::upsample::{n}::{HASH}",
            ButtonAction(Action.UPSCALE, n, "upsample", job_hash=HASH),
        )
        for n in range(1, 5)
    ),
    *(
        (
            f"MJ::JOB::variation::{n}::{HASH}",
            ButtonAction(Action.VARIATION, n, "variation", job_hash=HASH),
        )
        for n in range(1, 5)
    ),
    (
        f"MJ::JOB::reroll::0::{HASH}::SOLO",
        ButtonAction(Action.REROLL, None, "reroll", job_hash=HASH),
    ),
    (
        f"MJ::JOB::upsample_v6_2x_subtle::1::{HASH}::SOLO",
        ButtonAction(Action.UPSCALE, None, "subtle", job_hash=HASH),
    ),
    (
        f"MJ::JOB::upsample_v6_2x_creative::1::{HASH}::SOLO",
        ButtonAction(Action.UPSCALE, None, "creative", job_hash=HASH),
    ),
    (
        f"MJ::JOB::low_variation::1::{HASH}::SOLO",
        ButtonAction(Action.VARIATION, None, "low", job_hash=HASH),
    ),
    (
        f"MJ::JOB::high_variation::1::{HASH}::SOLO",
        ButtonAction(Action.VARIATION, None, "high", job_hash=HASH),
    ),
    (
        f"MJ::Inpaint::1::{HASH}::SOLO",
        ButtonAction(Action.VARIATION, None, "inpaint", requires_modal=True, job_hash=HASH),
    ),
    (
        f"MJ::Outpaint::50::1::{HASH}::SOLO",
        ButtonAction(Action.ZOOM, None, "zoom_2x", zoom_factor=2.0, job_hash=HASH),
    ),
    (
        f"MJ::Outpaint::75::1::{HASH}::SOLO",
        ButtonAction(Action.ZOOM, None, "zoom_1_5x", zoom_factor=1.5, job_hash=HASH),
    ),
    (
        f"MJ::CustomZoom::{HASH}",
        ButtonAction(Action.ZOOM, None, "custom_zoom", requires_modal=True, job_hash=HASH),
    ),
    *(
        (
            f"MJ::JOB::pan_{d}::1::{HASH}::SOLO",
            ButtonAction(Action.PAN, None, f"pan_{d}", pan_direction=d, job_hash=HASH),
        )
        for d in ("left", "right", "up", "down")
    ),
    *(
        (
            f"MJ::JOB::animate_{m}::1::{HASH}::SOLO",
            ButtonAction(Action.VIDEO, None, f"animate_{m}", job_hash=HASH),
        )
        for m in ("high", "low")
    ),
    *(
        (
            f"MJ::JOB::animate_{m}_extend::{n}::{HASH}",
            ButtonAction(Action.VIDEO, n, f"animate_{m}_extend", job_hash=HASH),
        )
        for n in range(1, 5)
        for m in ("high", "low")
    ),
    *(
        (
            f"MJ::Job::PicReader::{n}",
            ButtonAction(Action.IMAGINE, n, "picreader", requires_modal=True),
        )
        for n in range(1, 5)
    ),
    ("MJ::Picread::Retry", ButtonAction(Action.DESCRIBE, None, "picread_retry")),
    *(
        (
            f"MJ::Job::PromptAnalyzer::{n}",
            ButtonAction(Action.IMAGINE, n, "prompt_analyzer", requires_modal=True),
        )
        for n in range(1, 6)
    ),
]


@pytest.mark.parametrize(("custom_id", "expected"), EXPECTED_ACTIONS)
def test_resolve_custom_id(custom_id: str, expected: ButtonAction) -> None:
    resolved = resolve_custom_id(custom_id)

    assert resolved == ButtonAction(
        action=expected.action,
        index=expected.index,
        variant=expected.variant,
        zoom_factor=expected.zoom_factor,
        pan_direction=expected.pan_direction,
        requires_modal=expected.requires_modal,
        job_hash=expected.job_hash,
        custom_id=custom_id,
    )


def test_every_emitted_button_resolves_and_the_table_covers_them_all() -> None:
    emitted = {b.custom_id for b in every_button()}

    assert emitted == {custom_id for custom_id, _ in EXPECTED_ACTIONS}
    for custom_id in emitted:
        assert resolve_custom_id(custom_id).custom_id == custom_id


def test_modal_buttons_are_exactly_inpaint_custom_zoom_picreader_and_prompt_analyzer() -> None:
    modal = {b.custom_id for b in every_button() if resolve_custom_id(b.custom_id).requires_modal}

    assert modal == {
        f"MJ::Inpaint::1::{HASH}::SOLO",
        f"MJ::CustomZoom::{HASH}",
        *(f"MJ::Job::PicReader::{n}" for n in range(1, 5)),
        *(f"MJ::Job::PromptAnalyzer::{n}" for n in range(1, 6)),
    }


@pytest.mark.parametrize(
    ("custom_id", "action", "variant"),
    [
        ("MJ::JOB::upsample_v7_2x_subtle::1::abc::SOLO", Action.UPSCALE, "subtle"),
        ("MJ::JOB::upsample_v6r1_2x_creative::1::abc::SOLO", Action.UPSCALE, "creative"),
        ("MJ::JOB::upsample_v5_2x::1::abc::SOLO", Action.UPSCALE, "2x"),
        ("MJ::JOB::upsample_v5_4x::1::abc::SOLO", Action.UPSCALE, "4x"),
        ("MJ::JOB::upsample::2::abc::SOLO", Action.UPSCALE, "upsample"),
        ("  MJ::JOB::variation::3::abc  ", Action.VARIATION, "variation"),
    ],
)
def test_spellings_seen_from_other_midjourney_versions_resolve(
    custom_id: str, action: str, variant: str
) -> None:
    resolved = resolve_custom_id(custom_id)

    assert (resolved.action, resolved.variant, resolved.job_hash) == (action, variant, "abc")


@pytest.mark.parametrize(
    ("custom_id", "message"),
    [
        (
            "MJ::JOB::upsample::5::abc",
            "Button 'MJ::JOB::upsample::5::abc' points at image 5; U buttons go from 1 to 4.",
        ),
        (
            "MJ::JOB::variation::0::abc",
            "Button 'MJ::JOB::variation::0::abc' points at image 0; V buttons go from 1 to 4.",
        ),
        (
            "MJ::Outpaint::60::1::abc::SOLO",
            "Button 'MJ::Outpaint::60::1::abc::SOLO' asks for an outpaint of 60; "
            "only 50 (zoom out 2x) and 75 (zoom out 1.5x) exist.",
        ),
        (
            "MJ::Job::PicReader::5",
            "Button 'MJ::Job::PicReader::5' points at described prompt 5; there are 4.",
        ),
        (
            "MJ::Job::PromptAnalyzer::6",
            "Button 'MJ::Job::PromptAnalyzer::6' points at shortened prompt 6; there are 5.",
        ),
        (
            "MJ::BOOKMARK::abc",
            "Unknown button 'MJ::BOOKMARK::abc'; press one of the buttons listed on the task.",
        ),
        (
            "mj::job::upsample::1::abc",
            "Unknown button 'mj::job::upsample::1::abc'; press one of the buttons listed on the "
            "task.",
        ),
        (
            "MJ::JOB::upsample::1::",
            "Unknown button 'MJ::JOB::upsample::1::'; press one of the buttons listed on the task.",
        ),
        ("", "The button id must be a non-empty string."),
        ("   ", "The button id must be a non-empty string."),
    ],
)
def test_unknown_or_out_of_range_custom_ids_are_rejected(custom_id: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_custom_id(custom_id)

    assert info.value.message == message


def test_very_long_custom_id_is_shortened_in_the_message() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_custom_id("X" * 5000)

    assert info.value.message == (
        f"Unknown button '{'X' * 117}...'; press one of the buttons listed on the task."
    )


def test_non_string_custom_id_is_rejected() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_custom_id(None)  # type: ignore[arg-type]

    assert info.value.message == "The button id must be a non-empty string."


# --- aliases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "custom_id"),
    [
        ("U1", f"MJ::JOB::upsample::1::{HASH}"),
        ("u4", f"MJ::JOB::upsample::4::{HASH}"),
        ("upsample2", f"MJ::JOB::upsample::2::{HASH}"),
        ("V3", f"MJ::JOB::variation::3::{HASH}"),
        ("variation1", f"MJ::JOB::variation::1::{HASH}"),
        ("REROLL", f"MJ::JOB::reroll::0::{HASH}::SOLO"),
        ("reroll", f"MJ::JOB::reroll::0::{HASH}::SOLO"),
        ("R", f"MJ::JOB::reroll::0::{HASH}::SOLO"),
        ("reroll0", f"MJ::JOB::reroll::0::{HASH}::SOLO"),
        (f"MJ::JOB::variation::2::{HASH}", f"MJ::JOB::variation::2::{HASH}"),
    ],
)
def test_grid_aliases(name: str, custom_id: str) -> None:
    assert resolve_alias(name, extra_names=ttapi_names, available=grid()).custom_id == custom_id


@pytest.mark.parametrize(
    ("name", "custom_id"),
    [
        ("VARY_SUBTLE", f"MJ::JOB::low_variation::1::{HASH}::SOLO"),
        ("low_variation", f"MJ::JOB::low_variation::1::{HASH}::SOLO"),
        ("Vary (Subtle)", f"MJ::JOB::low_variation::1::{HASH}::SOLO"),
        ("VARY_STRONG", f"MJ::JOB::high_variation::1::{HASH}::SOLO"),
        ("high_variation", f"MJ::JOB::high_variation::1::{HASH}::SOLO"),
        ("VARY_REGION", f"MJ::Inpaint::1::{HASH}::SOLO"),
        ("inpaint", f"MJ::Inpaint::1::{HASH}::SOLO"),
        ("UPSCALE_SUBTLE", f"MJ::JOB::upsample_v6_2x_subtle::1::{HASH}::SOLO"),
        ("upscale_creative", f"MJ::JOB::upsample_v6_2x_creative::1::{HASH}::SOLO"),
        ("ZOOM_2X", f"MJ::Outpaint::50::1::{HASH}::SOLO"),
        ("zoom_out_2x", f"MJ::Outpaint::50::1::{HASH}::SOLO"),
        ("outpaint_2x", f"MJ::Outpaint::50::1::{HASH}::SOLO"),
        ("zoom_out_2", f"MJ::Outpaint::50::1::{HASH}::SOLO"),
        ("zoom_out_1.5", f"MJ::Outpaint::75::1::{HASH}::SOLO"),
        ("ZOOM_1_5X", f"MJ::Outpaint::75::1::{HASH}::SOLO"),
        ("zoom_out_1_5x", f"MJ::Outpaint::75::1::{HASH}::SOLO"),
        ("outpaint_1.5x", f"MJ::Outpaint::75::1::{HASH}::SOLO"),
        ("Zoom Out 1.5x", f"MJ::Outpaint::75::1::{HASH}::SOLO"),
        ("CUSTOM_ZOOM", f"MJ::CustomZoom::{HASH}"),
        ("outpaint_custom", f"MJ::CustomZoom::{HASH}"),
        ("PAN_LEFT", f"MJ::JOB::pan_left::1::{HASH}::SOLO"),
        ("pan_right", f"MJ::JOB::pan_right::1::{HASH}::SOLO"),
        ("Pan-Up", f"MJ::JOB::pan_up::1::{HASH}::SOLO"),
        ("pan_down", f"MJ::JOB::pan_down::1::{HASH}::SOLO"),
        ("reroll", f"MJ::JOB::reroll::0::{HASH}::SOLO"),
    ],
)
def test_upscale_aliases(name: str, custom_id: str) -> None:
    assert resolve_alias(name, extra_names=ttapi_names, available=upscale()).custom_id == custom_id


@pytest.mark.parametrize(
    ("name", "custom_id"),
    [
        ("describe1", "MJ::Job::PicReader::1"),
        ("DESCRIBE4", "MJ::Job::PicReader::4"),
        ("reroll", "MJ::Picread::Retry"),
        ("retry", "MJ::Picread::Retry"),
    ],
)
def test_describe_aliases(name: str, custom_id: str) -> None:
    assert resolve_alias(name, extra_names=ttapi_names, available=describe()).custom_id == custom_id


@pytest.mark.parametrize(("name", "number"), [("shorten1", 1), ("SHORTEN5", 5)])
def test_shorten_aliases(name: str, number: int) -> None:
    assert (
        resolve_alias(name, available=shorten(), extra_names=ttapi_names).custom_id
        == f"MJ::Job::PromptAnalyzer::{number}"
    )


@pytest.mark.parametrize(
    ("name", "buttons"),
    [("upsample2", grid()), ("outpaint_2x", upscale()), ("high_variation", upscale())],
)
def test_ttapi_names_are_the_ttapi_dialects_not_the_domains(name, buttons) -> None:
    with pytest.raises(ValidationFailed, match="is not available on this task"):
        resolve_alias(name, available=buttons)
    assert resolve_alias(name, available=buttons, extra_names=ttapi_names) in buttons


def test_ambiguous_bare_variants_are_not_aliases() -> None:
    with pytest.raises(ValidationFailed):
        resolve_alias("subtle", available=upscale())
    with pytest.raises(ValidationFailed):
        resolve_alias("upsample", available=grid())


def test_alias_not_offered_by_the_task_lists_what_it_offers() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_alias("U1", available=upscale())

    offered = [
        "UPSCALE_SUBTLE",
        "UPSCALE_CREATIVE",
        "VARY_SUBTLE",
        "VARY_STRONG",
        "VARY_REGION",
        "ZOOM_2X",
        "ZOOM_1_5X",
        "CUSTOM_ZOOM",
        "PAN_LEFT",
        "PAN_RIGHT",
        "PAN_UP",
        "PAN_DOWN",
        "ANIMATE_HIGH",
        "ANIMATE_LOW",
        "REROLL",
    ]
    assert info.value.message == (
        f"Button 'U1' is not available on this task; it offers {', '.join(offered)}."
    )
    assert info.value.details == {"field": "button", "button": "U1", "available": offered}


def test_unknown_alias_is_rejected_with_the_offer() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_alias("U5", available=grid())

    assert info.value.message == (
        "Button 'U5' is not available on this task; it offers "
        "U1, U2, U3, U4, REROLL, V1, V2, V3, V4."
    )


def test_a_custom_id_of_another_task_is_not_available() -> None:
    with pytest.raises(ValidationFailed, match="not available on this task"):
        resolve_alias("MJ::JOB::upsample::1::some-other-hash", available=grid())


def test_a_task_without_buttons_says_so() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_alias("U1", available=[])

    assert info.value.message == "This task has no buttons, so 'U1' cannot be pressed."
    assert info.value.details == {"field": "button", "button": "U1", "available": []}


@pytest.mark.parametrize("name", ["", "  ", None])
def test_empty_alias_is_rejected(name: str | None) -> None:
    with pytest.raises(ValidationFailed) as info:
        resolve_alias(name, available=grid())  # type: ignore[arg-type]

    assert info.value.message == "The button name must be a non-empty string."


def test_unknown_upstream_buttons_are_listed_by_label_and_can_be_pressed_by_label() -> None:
    bookmark = Button("MJ::BOOKMARK::abc", "❤️", "Bookmark")
    available = [*grid(), bookmark]

    assert friendly_name(bookmark) == "Bookmark"
    assert friendly_name(Button("MJ::Nope", "", "")) == "MJ::Nope"
    assert resolve_alias("bookmark", available=available) is bookmark
    assert resolve_alias("MJ::BOOKMARK::abc", available=available) is bookmark


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("buttons", [grid(), upscale(), describe(), shorten()])
def test_friendly_and_ttapi_names_round_trip_for_every_button(buttons: list[Button]) -> None:
    for button in buttons:
        assert resolve_alias(friendly_name(button), available=buttons) == button
        assert (
            resolve_alias(ttapi_component_name(button), available=buttons, extra_names=ttapi_names)
            == button
        )
        assert resolve_alias(button.custom_id, available=buttons) == button


def test_ttapi_component_names() -> None:
    assert ttapi_components(grid()) == [
        "upsample1",
        "upsample2",
        "upsample3",
        "upsample4",
        "reroll",
        "variation1",
        "variation2",
        "variation3",
        "variation4",
    ]
    assert ttapi_components(upscale()) == [
        "upscale_subtle",
        "upscale_creative",
        "low_variation",
        "high_variation",
        "inpaint",
        "zoom_out_2",
        "zoom_out_1.5",
        "outpaint_custom",
        "pan_left",
        "pan_right",
        "pan_up",
        "pan_down",
        "animate_high",
        "animate_low",
        "reroll",
    ]
    assert ttapi_components(describe()) == [
        "describe1",
        "describe2",
        "describe3",
        "describe4",
        "reroll",
    ]
    assert ttapi_components(shorten()) == [f"shorten{n}" for n in range(1, 6)]


def test_ttapi_components_skip_unknown_buttons_but_the_single_lookup_refuses() -> None:
    bookmark = Button("MJ::BOOKMARK::abc", "❤️", "")

    assert ttapi_components([bookmark, *grid()[:1]]) == ["upsample1"]
    with pytest.raises(ValueError, match="no TTAPI name"):
        ttapi_component_name(bookmark)


def test_friendly_names() -> None:
    assert [friendly_name(b) for b in grid()] == [
        "U1",
        "U2",
        "U3",
        "U4",
        "REROLL",
        "V1",
        "V2",
        "V3",
        "V4",
    ]
    assert [friendly_name(b) for b in describe()] == [
        "DESCRIBE1",
        "DESCRIBE2",
        "DESCRIBE3",
        "DESCRIBE4",
        "REROLL",
    ]
    assert [friendly_name(b) for b in shorten()] == [f"SHORTEN{n}" for n in range(1, 6)]
