"""Validation holes closed (issue 14): long dashes, ``--style``, ``--zoom`` outside Custom
Zoom, banned words as whole (hyphenated) words, and the default banned-word list."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps

from apps.billing.selectors import balance_get
from apps.core.errors import BannedPrompt, ValidationFailed
from apps.tasks.enums import Action
from apps.tasks.models import BannedWord, Task
from apps.tasks.prompt import find_banned_word, parse_prompt
from apps.tasks.services.submit import task_submit

pytestmark = pytest.mark.django_db

DEFAULTS = importlib.import_module("apps.tasks.migrations.0008_default_banned_words")


@pytest.fixture
def funded(organization, fund):
    fund(organization, 1_000_000)
    return organization


@pytest.mark.parametrize(
    "dash",
    [
        "\u2014",
        "\u2013",
        "\u2014\u2014",
        "\u2013\u2013",
        "\u2212",
        "\u2015",
        "\uff0d\uff0d",
        "\u2014-",
    ],
)
def test_long_dashes_are_read_as_double_hyphens_and_validated(dash):
    parsed = parse_prompt(f"a red fox {dash}ar 3:2 {dash}stylize 250")
    assert parsed.clean_prompt == "a red fox --ar 3:2 --stylize 250"
    assert parsed.get("ar") == "3:2"
    with pytest.raises(ValidationFailed, match="--ar 99:1 is too extreme"):
        parse_prompt(f"a red fox {dash}ar 99:1")
    with pytest.raises(ValidationFailed, match="Unknown parameter --bogus"):
        parse_prompt(f"a red fox {dash}bogus 3")


def test_a_dash_between_words_stays_prose():
    assert parse_prompt("cats \u2014 dogs").clean_prompt == "cats \u2014 dogs"
    assert parse_prompt("cats \u2013 dogs --ar 2:1").params[0].value == "2:1"


@pytest.mark.parametrize(
    "value", ["raw", "RAW", "cute", "expressive", "scenic", "original", "4a", "3d7fzgKAt1Qm"]
)
def test_style_accepts_midjourney_styles_and_codes(value):
    assert parse_prompt(f"a red fox --style {value}").get("style") == value


@pytest.mark.parametrize("value", ["bogus", "rawest", "pretty"])
def test_style_refuses_what_midjourney_does_not_know(value):
    with pytest.raises(ValidationFailed) as info:
        parse_prompt(f"a red fox --style {value}")
    assert info.value.message.startswith("--style must be one of raw, cute")
    assert f"got '{value}'" in info.value.message
    assert info.value.details["parameter"] == "--style"


@pytest.mark.parametrize(
    ("word", "text", "hit"),
    [
        ("gore", "a Gore-tex jacket in the rain", False),
        ("gore", "anti-gore poster", False),
        ("gore", "al gore giving a speech", True),
        ("gore", "GORE, everywhere", True),
        ("gore", "gore- and more", True),
        ("gore", "gorey illustration", False),
        ("blood bath", "a blood  bath", True),
        ("blood bath", "a blood-bath", False),
    ],
)
def test_banned_words_match_whole_words_only(word, text, hit):
    assert (find_banned_word(text, [word]) == word) is hit


def _snapshot(organization):
    balance = balance_get(organization=organization)
    return Task.objects.count(), balance.available, balance.held


def test_zoom_is_refused_on_imagine_and_nothing_changes(caller, funded):
    before = _snapshot(funded)
    with pytest.raises(ValidationFailed) as info:
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn --zoom 1.5")
    assert info.value.message.startswith("--zoom works only with Custom Zoom")
    assert info.value.details["parameter"] == "--zoom"
    with pytest.raises(ValidationFailed, match="--zoom works only"):
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn \u2014zoom 2")
    assert _snapshot(funded) == before


def test_style_and_em_dash_holes_are_closed_at_submit(caller, funded):
    before = _snapshot(funded)
    for prompt in (
        "a red barn --style bogus",
        "a red barn \u2014ar 1:99",
        "a barn \u2014\u2014v 99",
    ):
        with pytest.raises(ValidationFailed):
            task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt)
    assert _snapshot(funded) == before
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn \u2014ar 3:2").task
    assert task.prompt_en == "a red barn --ar 3:2"


def test_a_fresh_install_ships_a_default_list_that_operators_can_edit(caller, funded):
    assert BannedWord.objects.count() == 0  # the test fixture empties the seeded list
    DEFAULTS.seed_default_banned_words(django_apps, None)
    words = set(BannedWord.objects.values_list("word", flat=True))
    assert words == set(DEFAULTS.DEFAULT_BANNED_WORDS)
    assert "gore" in words and all(w == w.lower().strip() for w in words)

    before = _snapshot(funded)
    with pytest.raises(BannedPrompt) as info:
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a scene full of GORE")
    assert info.value.banned_word == "gore"
    assert _snapshot(funded) == before
    # Whole words: a brand name is not the banned word.
    assert task_submit(caller=caller, action=Action.IMAGINE, prompt="a Gore-tex jacket").task

    # Operators edit the list: a removed word no longer blocks, an added one does.
    BannedWord.objects.filter(word="gore").delete()
    BannedWord.objects.create(word="Forbidden Thing")
    assert task_submit(caller=caller, action=Action.IMAGINE, prompt="lots of gore").task
    with pytest.raises(BannedPrompt):
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a forbidden  thing")


def test_the_default_list_is_not_seeded_over_an_operators_own_list():
    BannedWord.objects.create(word="mine")
    DEFAULTS.seed_default_banned_words(django_apps, None)
    assert list(BannedWord.objects.values_list("word", flat=True)) == ["mine"]
