"""Prompt parsing and validation (SPEC §4.5): pure, no database."""

from __future__ import annotations

import pytest

from apps.core.errors import ValidationFailed
from apps.tasks.enums import Mode
from apps.tasks.prompt import (
    ParsedPrompt,
    PromptParam,
    aspect_ratio,
    find_banned_word,
    numbered_prompts,
    parse_prompt,
    result_prompts,
    seed,
    zoom,
)


def rejected(prompt: str, **kwargs: int) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_prompt(prompt, **kwargs)
    return info.value


# --- the happy path ----------------------------------------------------------------------------


def test_plain_prompt_has_no_params_and_is_sent_unchanged() -> None:
    parsed = parse_prompt("  a red fox in the snow  ")

    assert parsed == ParsedPrompt(
        original="a red fox in the snow",
        clean_prompt="a red fox in the snow",
        text="a red fox in the snow",
        image_urls=(),
        params=(),
        mode_flag=None,
    )
    assert aspect_ratio(parsed) == (1, 1)
    assert seed(parsed) is None
    assert zoom(parsed) is None


def test_parameters_are_parsed_in_order_and_kept_upstream() -> None:
    parsed = parse_prompt("a red fox --ar 16:9 --v 6.1 --no trees, snow --s 250 --seed 42 --tile")

    assert parsed.text == "a red fox"
    assert parsed.params == (
        PromptParam("ar", "ar", "16:9"),
        PromptParam("v", "v", "6.1"),
        PromptParam("no", "no", "trees, snow"),
        PromptParam("stylize", "s", "250"),
        PromptParam("seed", "seed", "42"),
        PromptParam("tile", "tile", None),
    )
    assert parsed.clean_prompt == (
        "a red fox --ar 16:9 --v 6.1 --no trees, snow --s 250 --seed 42 --tile"
    )
    assert parsed.param_dict == {
        "ar": "16:9",
        "v": "6.1",
        "no": "trees, snow",
        "stylize": "250",
        "seed": "42",
        "tile": None,
    }
    assert aspect_ratio(parsed) == (16, 9)
    assert seed(parsed) == 42


def test_aliases_resolve_to_canonical_names_but_keep_their_spelling_upstream() -> None:
    parsed = parse_prompt("cat --aspect 2:3 --version 5.2 --stylize 10 --chaos 5 --quality .5")

    assert [p.name for p in parsed.params] == ["ar", "v", "stylize", "chaos", "quality"]
    assert (
        parsed.clean_prompt == "cat --aspect 2:3 --version 5.2 --stylize 10 --chaos 5 --quality .5"
    )
    assert parsed.get("ar") == "2:3"
    assert parsed.get("--aspect") == "2:3"
    assert parsed.get("s") == "10"
    assert parsed.has("q")
    assert not parsed.has("seed")
    assert aspect_ratio(parsed) == (2, 3)


def test_whitespace_is_collapsed_to_single_spaces() -> None:
    parsed = parse_prompt("a  red\n\tfox   --ar   3:2  ")

    assert parsed.text == "a red fox"
    assert parsed.clean_prompt == "a red fox --ar 3:2"


def test_double_dash_inside_text_is_not_a_parameter() -> None:
    parsed = parse_prompt("state-of-the-art well--known robot -- shiny")

    assert parsed.params == ()
    assert parsed.text == "state-of-the-art well--known robot -- shiny"


# --- smart dashes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "a red fox \u2014ar 16:9 \u2014seed 7",  # iOS em dash
        "a red fox \u2013ar 16:9 \u2013seed 7",  # en dash
        "a red fox -\u2014ar 16:9 --seed 7",
        "a red fox \u2014-ar 16:9 --seed 7",
    ],
)
def test_phone_dashes_count_as_double_dash(prompt: str) -> None:
    parsed = parse_prompt(prompt)

    assert parsed.clean_prompt == "a red fox --ar 16:9 --seed 7"
    assert aspect_ratio(parsed) == (16, 9)
    assert seed(parsed) == 7


def test_a_free_standing_dash_stays_prose() -> None:
    parsed = parse_prompt("cats \u2014 dogs")

    assert parsed.params == ()
    assert parsed.clean_prompt == "cats \u2014 dogs"


# --- mode flags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "mode"), [("--fast", Mode.FAST), ("--relax", Mode.RELAX), ("--turbo", Mode.TURBO)]
)
def test_mode_flags_are_extracted_and_stripped(flag: str, mode: str) -> None:
    parsed = parse_prompt(f"a red fox {flag} --ar 2:1")

    assert parsed.mode_flag == mode
    assert parsed.clean_prompt == "a red fox --ar 2:1"
    assert parsed.params == (PromptParam("ar", "ar", "2:1"),)


def test_mode_flag_spelled_with_an_em_dash_is_stripped_too() -> None:
    parsed = parse_prompt("a red fox \u2014relax")

    assert parsed.mode_flag == Mode.RELAX
    assert parsed.clean_prompt == "a red fox"


def test_two_different_modes_are_rejected() -> None:
    error = rejected("a fox --fast --turbo")

    assert error.message == (
        "The prompt asks for more than one mode (--fast, --turbo); "
        "use only one of --fast, --relax and --turbo."
    )
    assert error.details == {"parameters": ["--fast", "--turbo"]}


def test_a_mode_flag_takes_no_value() -> None:
    error = rejected("a fox --fast 2")

    assert error.message == "--fast takes no value; got '2'."


# --- image URLs --------------------------------------------------------------------------------


def test_leading_image_urls_are_listed_and_kept() -> None:
    parsed = parse_prompt(
        "https://cdn.example.com/a.png <http://example.org/b.jpg> a red fox --iw 1.5"
    )

    assert parsed.image_urls == ("https://cdn.example.com/a.png", "http://example.org/b.jpg")
    assert parsed.text == "a red fox"
    assert parsed.clean_prompt == (
        "https://cdn.example.com/a.png <http://example.org/b.jpg> a red fox --iw 1.5"
    )


def test_a_url_after_the_text_is_just_text() -> None:
    parsed = parse_prompt("a fox like https://example.com/fox.png")

    assert parsed.image_urls == ()
    assert parsed.text == "a fox like https://example.com/fox.png"


def test_two_image_urls_without_text_are_a_valid_prompt() -> None:
    parsed = parse_prompt("https://a.example/1.png https://a.example/2.png --ar 1:1")

    assert parsed.text == ""
    assert parsed.image_urls == ("https://a.example/1.png", "https://a.example/2.png")


def test_one_image_url_without_text_is_rejected() -> None:
    error = rejected("https://a.example/1.png --ar 1:1")

    assert error.message == (
        "A single image URL is not a prompt; add a description or a second image."
    )


# --- length and emptiness ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_rejected(prompt: str) -> None:
    assert rejected(prompt).message == "The prompt is empty; describe the image you want."


def test_parameters_without_description_are_rejected() -> None:
    assert rejected("--ar 16:9 --v 6").message == (
        "The prompt has parameters but no description; describe the image before the parameters."
    )


def test_prompt_longer_than_the_maximum_is_rejected() -> None:
    error = rejected("x" * 8193)

    assert error.message == "The prompt is 8193 characters long; the maximum is 8192."
    assert error.details == {"length": 8193, "max_length": 8192}
    assert error.code == "validation_error"


def test_prompt_at_exactly_the_maximum_is_accepted_and_the_limit_is_configurable() -> None:
    assert parse_prompt("x" * 8192).text == "x" * 8192
    assert rejected("abcdef", max_length=5).message == (
        "The prompt is 6 characters long; the maximum is 5."
    )


def test_length_is_measured_after_stripping() -> None:
    assert parse_prompt("  abcde  ", max_length=5).text == "abcde"


def test_control_characters_are_rejected() -> None:
    error = rejected("a red\x00fox")

    assert error.message == "The prompt contains a control character (U+0000); remove it."


def test_non_string_prompt_is_rejected() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_prompt(None)  # type: ignore[arg-type]

    assert info.value.message == "The prompt must be a string."


# --- parameter names ---------------------------------------------------------------------------


def test_unknown_parameter_is_rejected_by_name() -> None:
    error = rejected("a red fox --foo 3")

    assert error.message == "Unknown parameter --foo."
    assert error.details == {"parameter": "--foo"}


def test_unknown_parameter_close_to_a_known_one_gets_a_hint() -> None:
    assert (
        rejected("a red fox --arr 3:2").message == "Unknown parameter --arr (did you mean --ar?)."
    )


def test_parameter_glued_to_its_value_is_unknown() -> None:
    assert rejected("a red fox --ar16:9").message == "Unknown parameter --ar16:9."


def test_parameter_names_are_case_insensitive() -> None:
    parsed = parse_prompt("a red fox --AR 4:3")

    assert parsed.params == (PromptParam("ar", "AR", "4:3"),)


def test_the_same_parameter_twice_is_rejected() -> None:
    assert rejected("fox --s 10 --s 20").message == "--s is given more than once; keep one."
    assert rejected("fox --s 10 --stylize 20").message == (
        "--stylize is given more than once (as --s and --stylize); keep one."
    )


# --- aspect ratio ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0:1", "1:0", "0:0"])
def test_aspect_ratio_with_a_zero_side_is_rejected(value: str) -> None:
    error = rejected(f"a red fox --ar {value}")

    assert error.message == (
        f"--ar must be a ratio of two positive whole numbers, like 16:9; got '{value}'."
    )
    assert error.details == {"parameter": "--ar", "value": value}


@pytest.mark.parametrize("value", ["16/9", "1.5:1", "-1:2", "16:9:1", "wide", "16 : 9"])
def test_malformed_aspect_ratio_is_rejected(value: str) -> None:
    error = rejected(f"a red fox --ar {value}")

    assert error.message == (
        f"--ar must be a ratio of two positive whole numbers, like 16:9; got '{value}'."
    )


@pytest.mark.parametrize("value", ["1:15", "15:1", "1:100"])
def test_extreme_aspect_ratio_is_rejected(value: str) -> None:
    assert rejected(f"fox --ar {value}").message == (
        f"--ar {value} is too extreme; the ratio must lie between 1:14 and 14:1."
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("1:14", (1, 14)), ("14:1", (14, 1)), ("32:18", (32, 18))]
)
def test_aspect_ratio_at_the_limits_is_accepted(value: str, expected: tuple[int, int]) -> None:
    assert aspect_ratio(parse_prompt(f"fox --ar {value}")) == expected


def test_aspect_ratio_needs_a_value() -> None:
    error = rejected("a red fox --ar")

    assert error.message == "--ar needs a value, for example --ar 16:9."
    assert error.details == {"parameter": "--ar"}


# --- value ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        "--v 1",
        "--v 5",
        "--v 5.0",
        "--v 5.1",
        "--v 5.2",
        "--v 6",
        "--v 6.0",
        "--v 6.1",
        "--v 7",
        "--niji",
        "--niji 5",
        "--niji 6",
        "--s 0",
        "--s 1000",
        "--stylize 500",
        "--c 0",
        "--chaos 100",
        "--q .25",
        "--q 0.5",
        "--q 1",
        "--quality 2",
        "--q 4",
        "--seed 0",
        "--seed 4294967295",
        "--iw 0",
        "--iw 0.5",
        "--iw 3",
        "--cw 0",
        "--cw 100",
        "--sw 1000",
        "--zoom 1",
        "--zoom 1.5",
        "--zoom 2",
        "--weird 3000",
        "--w 0",
        "--stop 10",
        "--stop 100",
        "--sv 4",
        "--exp 50",
        "--ow 100",
        "--style raw",
        "--style 4a",
        "--raw",
        "--tile",
        "--draft",
        "--hd",
        "--video",
        "--public",
        "--stealth",
        "--p",
        "--p m7xyz3 abc12",
        "--personalize",
        "--sref https://example.com/a.png https://example.com/b.png::2",
        "--sref 12345 random",
        "--cref https://example.com/char.png",
        "--oref https://example.com/object.png",
        "--no plants, buildings",
    ],
)
def test_accepted_values(tail: str) -> None:
    parsed = parse_prompt(f"a red fox {tail}")

    assert parsed.clean_prompt == f"a red fox {tail}"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("--v 8", "--v must be one of 1, 2, 3, 4, 5, 5.1, 5.2, 6, 6.1, 7; got '8'."),
        ("--v 5.3", "--v must be one of 1, 2, 3, 4, 5, 5.1, 5.2, 6, 6.1, 7; got '5.3'."),
        (
            "--version latest",
            "--version must be one of 1, 2, 3, 4, 5, 5.1, 5.2, 6, 6.1, 7; got 'latest'.",
        ),
        ("--niji 3", "--niji must be one of 4, 5, 6, 7; got '3'."),
        ("--s 1001", "--s must be a whole number from 0 to 1000; got '1001'."),
        ("--s -1", "--s must be a whole number from 0 to 1000; got '-1'."),
        ("--stylize 1.5", "--stylize must be a whole number from 0 to 1000; got '1.5'."),
        ("--c 101", "--c must be a whole number from 0 to 100; got '101'."),
        ("--chaos many", "--chaos must be a whole number from 0 to 100; got 'many'."),
        ("--q 3", "--q must be one of .25, .5, 1, 2, 4; got '3'."),
        ("--quality .75", "--quality must be one of .25, .5, 1, 2, 4; got '.75'."),
        (
            "--seed 4294967296",
            "--seed must be a whole number from 0 to 4294967295; got '4294967296'.",
        ),
        ("--seed abc", "--seed must be a whole number from 0 to 4294967295; got 'abc'."),
        ("--iw 3.5", "--iw must be a number from 0 to 3; got '3.5'."),
        ("--cw 101", "--cw must be a whole number from 0 to 100; got '101'."),
        ("--sw 1001", "--sw must be a whole number from 0 to 1000; got '1001'."),
        ("--zoom 0.9", "--zoom must be a number from 1 to 2; got '0.9'."),
        ("--zoom 2.1", "--zoom must be a number from 1 to 2; got '2.1'."),
        ("--weird 3001", "--weird must be a whole number from 0 to 3000; got '3001'."),
        ("--stop 9", "--stop must be a whole number from 10 to 100; got '9'."),
        ("--s 100 200", "--s must be a whole number from 0 to 1000; got '100 200'."),
        ("--tile seamless", "--tile takes no value; got 'seamless'."),
        ("--no", "--no needs a value, for example --no plants."),
        ("--style", "--style needs a value, for example --style raw."),
        ("--seed", "--seed needs a value, for example --seed 2147483647."),
    ],
)
def test_rejected_values(tail: str, message: str) -> None:
    assert rejected(f"a red fox {tail}").message == message


def test_value_errors_name_the_parameter_and_value_in_details() -> None:
    error = rejected("fox --c 300")

    assert error.details == {"parameter": "--c", "value": "300"}


def test_zoom_and_seed_helpers_convert_values() -> None:
    parsed = parse_prompt("a red fox --zoom 1.75 --seed 4294967295")

    assert zoom(parsed) == 1.75
    assert seed(parsed) == 4294967295


# --- banned words ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "banned", "expected"),
    [
        ("a classy fox", ["ass"], None),
        ("a fox in class", ["ass"], None),
        ("kiss my ass", ["ass"], "ass"),
        ("Kiss my ASS!", ["ass"], "ass"),
        ("(ass)", ["ass"], "ass"),
        ("ass,fox", ["ass"], "ass"),
        ("assassin", ["ass"], None),
        ("a bad  word here", ["bad word"], "bad word"),
        ("a bad\nWord here", ["bad word"], "bad word"),
        ("a badword here", ["bad word"], None),
        ("bad_word", ["bad"], None),
        ("a nude fox", ["gore", "Nude"], "Nude"),
        ("gore and nude", ["nude", "gore"], "gore"),  # the earliest in the text wins
        ("an image of 色情 content", ["色情"], "色情"),
        ("一张色情图片", ["色情"], "色情"),
        ("make $$$ fast", ["$$$"], "$$$"),
        ("a café scene", ["café"], "café"),
        ("a red fox", [], None),
        ("a red fox", ["", "  "], None),
        ("", ["fox"], None),
    ],
)
def test_find_banned_word(text: str, banned: list[str], expected: str | None) -> None:
    assert find_banned_word(text, banned) == expected


def test_find_banned_word_accepts_any_iterable_and_strips_list_entries() -> None:
    assert find_banned_word("a gory scene with blood", (w for w in [" blood "])) == "blood"


def test_banned_word_in_a_parameter_is_found_when_the_caller_passes_the_whole_prompt() -> None:
    parsed = parse_prompt("a red fox --no blood")

    assert find_banned_word(parsed.clean_prompt, ["blood"]) == "blood"


# --- numbered prompt lists -------------------------------------------------------------------


def test_numbered_prompts_are_read_in_order_whitespace_collapsed_and_empties_skipped() -> None:
    text = "Analysis: long.\n1\ufe0f\u20e3 a red  fox,\n in snow\n\n2\ufe0f\u20e3   \n3\ufe0f\u20e3 a fox"

    assert numbered_prompts(text) == ["a red fox, in snow", "a fox"]
    assert numbered_prompts("") == []
    assert numbered_prompts("no list at all") == []
    # A bare digit is not a mark: "1 fox" stays part of the prompt.
    assert numbered_prompts("1\ufe0f\u20e3 1 fox 2 hens") == ["1 fox 2 hens"]


def test_result_prompts_prefer_the_kept_list_and_fall_back_to_final_prompt() -> None:
    listed = "1\ufe0f\u20e3 from text"

    assert result_prompts({"prompts": ["kept"], "finalPrompt": listed}) == ["kept"]
    assert result_prompts({"prompts": [], "finalPrompt": listed}) == ["from text"]
    assert result_prompts(None) == []
