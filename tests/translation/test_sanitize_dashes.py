"""A translator's answer cannot add a parameter with any dash the prompt parser reads as ``--``.

The parser turns a run of long dashes (en and em dash, minus sign, figure dash, horizontal bar,
small and full-width forms) glued to a letter into ``--``; ``sanitize`` folds every one of
them, so an answer such as ``a cat −−seed 5`` stays prose and never reaches upstream as a
parameter the price, seed and re-hosting checks of the original never saw.
"""

from __future__ import annotations

import pytest

from apps.tasks.models import Task
from apps.tasks.prompt import LONG_DASHES, parse_prompt
from apps.translation import fake
from apps.translation.models import TranslatorKind
from apps.translation.segments import sanitize

DASHES = sorted(LONG_DASHES)


@pytest.mark.parametrize("dash", DASHES, ids=[f"U+{ord(d):04X}" for d in DASHES])
@pytest.mark.parametrize("marker", ["{d}{d}", "{d}", "-{d}", "{d}-"])
def test_no_dash_the_parser_reads_as_a_marker_survives_sanitize(dash, marker):
    answer = f"a cat {marker.format(d=dash)}seed 5 {marker.format(d=dash)}sref 42"
    parsed = parse_prompt(sanitize(answer))
    assert parsed.params == ()
    assert "--" not in parsed.clean_prompt


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer", ["a cat \u2212\u2212seed 5", "a cat \u2015draft \u2012\u2012sref 7"]
)
def test_a_translation_with_long_dashes_adds_no_parameter_upstream(
    answer, use_translator, fake_translators, funded, live_key, client_for, sandbox, monkeypatch
):
    monkeypatch.setitem(fake.GLOSSARY, "坏", answer)
    monkeypatch.setattr(fake, "_BY_LENGTH", sorted(fake.GLOSSARY, key=len, reverse=True))
    use_translator(TranslatorKind.DEEPL)
    response = client_for(live_key).post(
        "/mj/submit/imagine", {"prompt": "坏 --ar 1:1"}, format="json"
    )
    assert response.status_code == 200, response.content
    task = Task.objects.get(pk=response.json()["result"])
    assert task.properties["translation"]["status"] == "translated"
    upstream = parse_prompt(task.prompt_en)
    assert [name for name in ("seed", "draft", "sref") if upstream.has(name)] == []
    assert upstream.has("ar")
