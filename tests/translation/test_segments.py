"""What a translator may see, and that everything else survives byte for byte."""

from __future__ import annotations

import pytest

from apps.translation.segments import (
    has_chinese,
    join_pieces,
    needs_translation,
    sanitize,
    split_prompt,
)

PROMPTS = [
    "一只猫 在草地上 --ar 3:2 --no 汽车, 人 --stylize 200",
    "https://example.com/a.png 红色的花::2 蓝天::-0.5 <@123456> --sref https://e.x/b.png --p ab12",
    "a red fox --no dogs --v 6.1",
    "猫",
    "  红色的花   --ar 16:9  ",
    "red flowers::1.5 夜晚的城市:: --chaos 10 --seed 42 --cw 50 --no",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_pieces_join_back_to_the_prompt_exactly(prompt):
    assert "".join(piece.text for piece in split_prompt(prompt)) == prompt


def test_only_prose_and_no_values_are_sent():
    pieces = split_prompt(PROMPTS[0])
    assert [p.text for p in pieces if p.translate] == ["一只猫 在草地上", "汽车, 人"]
    pieces = split_prompt(PROMPTS[1])
    assert [p.text for p in pieces if p.translate] == ["红色的花", "蓝天"]
    kept = "".join(p.text for p in pieces if not p.translate)
    for token in (
        "https://example.com/a.png",
        "::2",
        "::-0.5",
        "<@123456>",
        "--sref https://e.x/b.png",
        "--p ab12",
    ):
        assert token in kept


def test_english_sends_nothing():
    assert not any(p.translate for p in split_prompt("a red fox --no dogs --v 6.1"))
    assert not needs_translation("a red fox --ar 3:2")
    assert needs_translation("кот") and needs_translation("café") and needs_translation("猫")


def test_chinese_is_told_apart():
    assert has_chinese("一只猫") and not has_chinese("кот") and not has_chinese("cat")


def test_a_translation_cannot_add_parameters_weights_or_references():
    assert sanitize("a cat --ar 9:16") == "a cat -ar 9:16"
    assert sanitize("a cat — and :: <@1>\n dog") == "a cat - and : @1 dog"
    assert sanitize('"a cat"') == "a cat"


def test_join_replaces_only_translated_pieces():
    pieces = split_prompt("猫 --no 猫")
    assert join_pieces(pieces, {"猫": "cat"}) == "cat --no cat"
