"""The prompt parser refuses what it cannot read or price: numbers too long for ``int()`` and
prompts Midjourney would run as several jobs (``--repeat``, ``{a, b}`` permutations)."""

from __future__ import annotations

import pytest

from apps.core.errors import ValidationFailed
from apps.tasks.prompt import aspect_ratio, known_seed, parse_prompt, seed

HUGE = "9" * 4400  # Python's int() refuses strings of more than 4300 digits


def rejected(prompt: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_prompt(prompt)
    return info.value


# --- numbers too long to convert -----------------------------------------------------------


@pytest.mark.parametrize("name", ["seed", "s", "chaos", "stop", "weird", "cw", "sw", "ow"])
def test_a_whole_number_too_long_to_convert_is_out_of_range(name: str) -> None:
    error = rejected(f"a red fox --{name} {HUGE}")
    assert error.message.startswith(f"--{name} must be a whole number from ")
    assert error.details["parameter"] == f"--{name}"


def test_leading_zeros_do_not_get_a_long_number_past_the_check() -> None:
    # 0…042 is in range, but the accessors would have to convert all of its digits.
    error = rejected(f"a red fox --seed {'0' * 4400}42")
    assert error.details["parameter"] == "--seed"
    assert seed(parse_prompt("a red fox --seed 00042")) == 42


@pytest.mark.parametrize(
    "ratio", [f"1:{HUGE}", f"{HUGE}:1", f"{HUGE[:3000]}:{HUGE[:3000]}", f"{'0' * 4400}1:1"]
)
def test_an_aspect_ratio_too_long_to_convert_is_refused(ratio: str) -> None:
    error = rejected(f"a red fox --ar {ratio}")
    assert (
        error.message == f"--ar takes whole numbers of at most 20 digits, like 16:9; got '{ratio}'."
    )
    assert error.details == {"parameter": "--ar", "value": ratio}
    assert aspect_ratio(parse_prompt("a red fox --ar 0016:9")) == (16, 9)


# --- prompts that would run as several jobs ---------------------------------------------------


@pytest.mark.parametrize("tail", ["--repeat 40", "--r 2", "--repeat 1", "--r"])
def test_repeat_is_refused_naming_the_parameter(tail: str) -> None:
    error = rejected(f"a red fox {tail}")
    written = tail.split()[0]
    assert error.message.startswith(f"{written} is not supported: Midjourney would run")
    assert "a task is one job" in error.message
    assert error.details["parameter"] == written


@pytest.mark.parametrize(
    ("prompt", "group"),
    [
        ("a {red, green} fox", "{red, green}"),
        ("a {red,green} {fox, owl} in the snow", "{red,green}"),
        ("a fox --ar {16:9, 1:1}", "{16:9, 1:1}"),
        ("a fox --no {trees, houses}", "{trees, houses}"),
        ("a {big {red, blue}} fox", "{red, blue}"),
        ("a {red\\, green, blue} fox", "{red\\, green, blue}"),
    ],
)
def test_permutations_are_refused_escaped_braces_stay_text(prompt: str, group: str) -> None:
    error = rejected(prompt)
    assert error.message.startswith(f"Permutation prompts are not supported: {group} ")
    assert error.details == {"permutation": group}
    if "--" not in prompt:
        # Midjourney reads \{ \} as literal braces: the same prompt escaped is one job.
        literal = prompt.replace("{", "\\{").replace("}", "\\}")
        assert parse_prompt(literal).clean_prompt == literal


@pytest.mark.parametrize(
    "prompt",
    [
        "a {red\\, green} fox",  # one option with a literal comma
        "a {red} fox",  # one option
        "a } fox, {",
    ],
)
def test_braces_without_options_are_one_job(prompt: str) -> None:
    parse_prompt(prompt)  # accepted
    assert rejected(f"{prompt} {{day, night}}").details == {"permutation": "{day, night}"}


# --- the seed known before a job starts -------------------------------------------------------


def test_known_seed_before_the_start_is_only_the_prompts() -> None:
    assert known_seed(current=123, prompt="a red fox", started=False) is None
    assert known_seed(current=7, prompt="a red fox --seed 7", started=False) == 7
    assert known_seed(current=7, prompt="a red fox —sameseed 7", started=False) == 7
    assert known_seed(current=123, prompt="a red fox", started=True) == 123
    assert known_seed(current=None, prompt="a red fox --seed 7", started=True) is None
    # A prompt that no longer parses fixes no seed.
    assert known_seed(current=5, prompt="a fox --seed 5 --bogus", started=False) is None
