"""Image references and V7 parameters validated per model version (issue 17)."""

from __future__ import annotations

import pytest

from apps.core.errors import ValidationFailed
from apps.tasks.prompt import is_draft, parse_prompt

URL = "https://example.com/a.png"


def rejected(prompt: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_prompt(prompt)
    return caught.value


@pytest.mark.parametrize(
    "tail",
    [
        f"--cref {URL} --cw 50 --v 6",
        f"--cref {URL} --cw 0 --v 6.1",
        f"--cref {URL} --niji 6",
        f"--oref {URL} --ow 400 --v 7",
        f"--sref {URL}::2 12345 random --sw 300 --v 7",
        f"--sref {URL} --v 6.1",
        "--sref 4028286908 --niji 6",
        "--draft --v 7",
        "--exp 25 --v 7",
        "--p --v 7",
        "--p m7234567890 ab_c-12 --v 6.1",
        "--iw 2.5 --v 6",
        "--iw 0.5 --v 5.2",
        # No model named: the account's default model decides upstream.
        f"--cref {URL} --cw 100",
        f"--oref {URL} --draft --exp 10",
    ],
)
def test_references_and_v7_parameters_a_model_takes_are_accepted(tail: str) -> None:
    parsed = parse_prompt(f"{URL} a red fox {tail}")
    assert parsed.clean_prompt == f"{URL} a red fox {tail}"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (
            f"--cref {URL} --v 7",
            "--cref works only with V6, V6.1 and niji 6; this prompt uses --v 7.",
        ),
        ("--cw 50 --v 5.2", "--cw works only with V6, V6.1 and niji 6; this prompt uses --v 5.2."),
        (f"--oref {URL} --v 6.1", "--oref works only with V7; this prompt uses --v 6.1."),
        ("--ow 100 --niji 6", "--ow works only with V7; this prompt uses --niji 6."),
        ("--draft --v 6", "--draft works only with V7; this prompt uses --v 6."),
        ("--exp 5 --version 6.1", "--exp works only with V7; this prompt uses --version 6.1."),
        (
            f"--sref {URL} --v 5.2",
            "--sref works only with V6 and later (and niji 6 and later); this prompt uses --v 5.2.",
        ),
        (
            "--p --niji 5",
            "--p works only with V6 and later (and niji 6 and later); this prompt uses --niji 5.",
        ),
        ("--iw 2.5 --v 5.1", "--iw must be a number from 0.5 to 2 with --v 5.1; got '2.5'."),
        ("--iw 0.2 --v 5", "--iw must be a number from 0.5 to 2 with --v 5; got '0.2'."),
        ("--iw 1 --v 4", "--iw works only with V5 and later; this prompt uses --v 4."),
        ("--v 7 --niji 6", "The prompt names two models (--v and --niji); keep one."),
        (
            f"--oref {URL} {URL}",
            "--oref takes exactly one image URL; got 2.",
        ),
        ("--oref character", "--oref takes one image URL; got 'character'."),
        (f"--cref {URL}::2", f"--cref takes image URLs; got '{URL}::2'."),
        ("--cref 12345", "--cref takes image URLs; got '12345'."),
        (
            "--sref vintage",
            "--sref takes image URLs, style codes (numbers) or random; got 'vintage'.",
        ),
        (
            "--p abc!def",
            "--p takes personalization codes (letters, digits, _ and -); got 'abc!def'.",
        ),
    ],
)
def test_a_parameter_its_model_does_not_take_is_refused(tail: str, message: str) -> None:
    error = rejected(f"a red fox {tail}")
    assert error.message == message


def test_draft_is_recognised() -> None:
    assert is_draft(parse_prompt("a red fox --draft --v 7"))
    assert not is_draft(parse_prompt("a red fox --v 7"))
