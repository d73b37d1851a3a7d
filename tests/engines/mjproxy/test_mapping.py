"""The mj-proxy dialect as an upstream speaks it: pure translations, no database."""

from __future__ import annotations

import pytest

from apps.engines.base import PermanentEngineError, PollResult
from apps.engines.mjproxy import mapping
from apps.tasks.buttons import buttons_for
from apps.tasks.enums import Action, ErrorCode


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"code": 1, "description": "ok", "result": "123"}, mapping.Accepted("123")),
        ({"code": 22, "description": "In queue", "result": 456}, mapping.Accepted("456")),
        (
            {"code": 21, "description": "modal", "result": "789"},
            mapping.Accepted("789", modal=True),
        ),
    ],
)
def test_accepted_codes(answer, expected):
    assert mapping.submit_outcome(answer) == expected


def test_queue_full_is_its_own_signal():
    with pytest.raises(mapping.QueueFull) as caught:
        mapping.submit_outcome({"code": 23, "description": "queue is full, retry later"})
    assert caught.value.description == "queue is full, retry later"


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            {"code": 24, "description": "banned", "properties": {"bannedWord": "gore"}},
            ErrorCode.BANNED_PROMPT,
            "The upstream rejected the prompt as banned ('gore'): banned",
        ),
        (
            {"code": 4, "description": "bad --ar"},
            ErrorCode.INVALID_PARAMETER,
            "The upstream rejected the request as invalid: bad --ar",
        ),
        (
            {"code": 3, "description": "task not found"},
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream no longer knows the parent task: task not found",
        ),
        (
            {"code": 9, "description": None},
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream rejected the request (code 9): no reason given",
        ),
        (
            {"code": 1, "description": "ok", "result": None},
            ErrorCode.UPSTREAM_ERROR,
            "The upstream accepted the job but did not say which job it is.",
        ),
        (
            "<html>oops</html>",
            ErrorCode.UPSTREAM_ERROR,
            "The upstream gave an answer we do not understand (HTTP 200).",
        ),
    ],
)
def test_refusals_are_permanent_with_a_sentence_and_a_code(answer, code, message):
    with pytest.raises(PermanentEngineError) as caught:
        mapping.submit_outcome(answer)
    assert (caught.value.error_code, caught.value.message) == (code, message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("42%", 42), ("0%", 0), ("99.5%", 99), ("", 0), (None, 0), ("150%", 100)],
)
def test_progress(value, expected):
    assert mapping.parse_progress(value) == expected


def test_running_statuses_never_claim_completion():
    for status in ("NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL", ""):
        view = mapping.upstream_view({"status": status, "progress": "100%"}, action=Action.IMAGINE)
        assert (view.status, view.progress) == (PollResult.RUNNING, 99)


def test_success_keeps_only_the_prompt_text_from_properties():
    view = mapping.upstream_view(
        {
            "status": "SUCCESS",
            "imageUrl": "https://cdn.example/x.png",
            "progress": "100%",
            "properties": {"finalPrompt": "a cat", "discordInstanceId": "1", "messageHash": "h"},
            "buttons": [{"customId": "MJ::JOB::upsample::1::h", "label": "U1"}],
        },
        action=Action.VARIATION,
    )
    assert view.status == PollResult.SUCCESS
    assert view.is_grid is True
    assert view.properties == {"finalPrompt": "a cat"}
    assert view.image_url == "https://cdn.example/x.png"
    assert view.poll_result().image is None


def test_upscale_results_are_single_images():
    view = mapping.upstream_view({"status": "SUCCESS"}, action=Action.UPSCALE)
    assert view.is_grid is False


def test_describe_and_shorten_prompts_are_numbered_out():
    text = "1️⃣ a red fox --ar 3:2\n\n2️⃣ a fox in snow\n\n3️⃣ fox, painting\n\n4️⃣ fox photo"
    view = mapping.upstream_view(
        {"status": "SUCCESS", "properties": {"finalPrompt": text}}, action=Action.DESCRIBE
    )
    assert view.properties["prompts"] == [
        "a red fox --ar 3:2",
        "a fox in snow",
        "fox, painting",
        "fox photo",
    ]
    shortened = mapping.upstream_view(
        {"status": "SUCCESS", "promptEn": "Important tokens: fox\n\n1️⃣ fox\n\n2️⃣ red fox"},
        action=Action.SHORTEN,
    )
    assert shortened.properties["analysis"] == "Important tokens: fox"
    assert shortened.properties["prompts"] == ["fox", "red fox"]


@pytest.mark.parametrize(
    ("status", "reason", "code", "shown"),
    [
        (
            "FAILURE",
            "Banned prompt: blood",
            ErrorCode.BANNED_PROMPT,
            "The upstream rejected the prompt as banned: Banned prompt: blood",
        ),
        (
            "FAILURE",
            "可能包含敏感词",
            ErrorCode.BANNED_PROMPT,
            "The upstream rejected the prompt as banned: 可能包含敏感词",
        ),
        (
            "FAILURE",
            None,
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream failed the job: no reason given",
        ),
        ("CANCEL", None, ErrorCode.UPSTREAM_REJECTED, "The upstream cancelled the job."),
        (
            "EXPLODED",
            None,
            ErrorCode.UPSTREAM_REJECTED,
            "The upstream failed the job: unknown status EXPLODED",
        ),
    ],
)
def test_failures(status, reason, code, shown):
    view = mapping.upstream_view({"status": status, "failReason": reason}, action=Action.IMAGINE)
    assert (view.status, view.error_code, view.fail_reason) == (PollResult.FAILURE, code, shown)


def _dicts(buttons):
    """Our buttons as stored on a task (domain keys)."""
    return [b.as_dict() for b in buttons]


def _upstream(button, custom_id):
    """A button as an upstream midjourney-proxy's task JSON spells it."""
    return {"customId": custom_id, "emoji": button.emoji, "label": button.label}


def test_buttons_match_by_meaning_across_hashes_and_model_versions():
    ours = _dicts(buttons_for(Action.UPSCALE, job_hash="ours", is_grid=False))
    assert all("custom_id" in b and "customId" not in b for b in ours)
    theirs = [
        _upstream(b, b.custom_id.replace("upsample_v6_", "upsample_v7_"))
        for b in buttons_for(Action.UPSCALE, job_hash="theirs", is_grid=False)
    ]
    theirs.reverse()  # order does not matter when the meaning is clear
    for mine in ours:
        found = mapping.upstream_custom_id(pressed=mine["custom_id"], ours=ours, theirs=theirs)
        assert found is not None
        assert found.endswith("theirs::SOLO") or found == "MJ::CustomZoom::theirs"
        assert found.replace("theirs", "ours").replace("_v7_", "_v6_") == mine["custom_id"]


def test_unknown_customids_fall_back_to_label_then_position():
    ours = [
        {"custom_id": "MJ::JOB::odd::1::a", "label": "Make Square", "emoji": ""},
        {"custom_id": "MJ::JOB::other::1::a", "label": "", "emoji": "✨"},
    ]
    theirs = [
        {"customId": "MJ::JOB::odd::1::b", "label": "Make Square", "emoji": ""},
        {"customId": "MJ::JOB::other::1::b", "label": "", "emoji": "✨"},
    ]
    assert mapping.upstream_custom_id(pressed=ours[0]["custom_id"], ours=ours, theirs=theirs) == (
        "MJ::JOB::odd::1::b"
    )
    assert mapping.upstream_custom_id(pressed=ours[1]["custom_id"], ours=ours, theirs=theirs) == (
        "MJ::JOB::other::1::b"
    )
    assert (
        mapping.upstream_custom_id(pressed=ours[1]["custom_id"], ours=ours, theirs=theirs[:1])
        is None
    )
    assert (
        mapping.upstream_custom_id(pressed="MJ::JOB::upsample::1::a", ours=ours, theirs=theirs)
        is None
    )
