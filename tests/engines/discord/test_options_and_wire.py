"""Account validation (through the upstream-account service) and the wire parsers."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from apps.core.errors import ValidationFailed
from apps.engines.discord import wire
from apps.engines.discord.options import parse
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_clean, upstream_account_create

TOKEN = "mfa.AbCdEf0123456789-token-value"
GOOD = {"guild_id": "600000000000000001", "channel_id": "700000000000000001", "token": TOKEN}


@pytest.mark.django_db
def test_the_token_is_a_secret_encrypted_at_rest() -> None:
    account = upstream_account_create(
        engine="discord",
        name="d1",
        modes=["FAST"],
        options={**GOOD, "bots": "MID_JOURNEY,NIJI_JOURNEY"},
    )
    assert account.secrets == {"token": TOKEN}
    assert "token" not in account.options
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT options::text, secrets FROM engines_upstreamaccount WHERE id = %s", [account.pk]
        )
        options, secrets = cursor.fetchone()
    assert TOKEN not in options and TOKEN not in secrets
    settings = parse(UpstreamAccount.objects.get(pk=account.pk).options, account.secrets)
    assert settings.bots == ("MID_JOURNEY", "NIJI_JOURNEY")
    assert settings.rest_base_url == "https://discord.com/api/v10"
    assert settings.cdn_origins == ("https://cdn.discordapp.com", "https://media.discordapp.net")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": ""}, "discord needs token"),
        ({"token": "has spaces in it, not a token"}, "discord needs token"),
        ({"guild_id": ""}, "discord needs guild_id"),
        ({"channel_id": "general"}, "channel_id must be a Discord id"),
        ({"niji_channel_id": "12ab"}, "niji_channel_id must be a Discord id"),
        ({"bots": "MIDJOURNEY"}, "bots must list MID_JOURNEY and/or NIJI_JOURNEY."),
        ({"fast_fallback_to_relax": "maybe"}, "fast_fallback_to_relax must be true or false."),
        ({"gateway_url": "https://gateway.discord.gg"}, "gateway_url must be a wss or ws URL"),
        ({"rest_base_url": "discord.com/api"}, "rest_base_url must be a https or http URL"),
        ({"submit_confirm_seconds": "600"}, "submit_confirm_seconds must be between 0 and 60."),
        ({"channel": "1"}, "Unknown discord option(s) channel"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else "",
)
def test_bad_settings_are_refused_with_a_sentence(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        upstream_account_clean(
            engine="discord", name="d", modes=["FAST"], options={**GOOD, **change}
        )
    assert message in str(caught.value)
    assert not UpstreamAccount.objects.exists()


def test_numeric_ids_given_as_numbers_are_kept_as_ids() -> None:
    settings = parse(
        {"guild_id": 600000000000000001, "channel_id": 700000000000000001}, {"token": TOKEN}
    )
    assert (settings.guild_id, settings.channel_id) == ("600000000000000001", "700000000000000001")
    assert settings.channel_for("NIJI_JOURNEY") == "700000000000000001"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "**a cat --ar 2:3** - <@123456> (Waiting to start)",
            ("a cat --ar 2:3", "123456", None, True, None, ""),
        ),
        ("**a cat** - <@123456> (31%) (fast)", ("a cat", "123456", 31, False, None, "")),
        ("**a cat** - <@123456> (relaxed)", ("a cat", "123456", None, False, None, "")),
        ("**a cat** - Image #3 <@123456>", ("a cat", "123456", None, False, 3, "")),
        (
            "**a cat** - Variations (Strong) by <@123456> (fast)",
            ("a cat", "123456", None, False, None, "Variations (Strong)"),
        ),
        (
            "**a cat** - Pan Left by <@!123456> (62%) (turbo)",
            ("a cat", "123456", 62, False, None, "Pan Left"),
        ),
    ],
    ids=["waiting", "progress", "done", "upscale", "variation", "pan-progress"],
)
def test_bot_messages_are_parsed(content: str, expected: tuple[Any, ...]) -> None:
    text = wire.parse_content(content)
    assert text is not None
    assert (
        text.prompt,
        text.user_id,
        text.progress,
        text.waiting,
        text.image_index,
        text.label,
    ) == expected


def test_our_custom_ids_translate_to_the_upstream_message_ones() -> None:
    theirs = [
        "MJ::JOB::upsample::1::3c6d3742-28bb-4354-a735-c815d82c4184",
        "MJ::JOB::variation::1::3c6d3742-28bb-4354-a735-c815d82c4184",
        "MJ::Outpaint::50::1::3c6d3742-28bb-4354-a735-c815d82c4184::SOLO",
        "MJ::CustomZoom::3c6d3742-28bb-4354-a735-c815d82c4184",
        "MJ::Job::PicReader::2",
    ]
    assert (
        wire.their_custom_id("MJ::JOB::upsample::1::0123456789abcdef0123456789abcdef", theirs)
        == theirs[0]
    )
    assert wire.their_custom_id("MJ::Outpaint::50::1::0123456789abcdef::SOLO", theirs) == theirs[2]
    assert wire.their_custom_id("MJ::CustomZoom::0123456789abcdef01", theirs) == theirs[3]
    assert wire.their_custom_id("MJ::Job::PicReader::2", theirs) == theirs[4]
    assert (
        wire.their_custom_id("MJ::JOB::upsample::2::0123456789abcdef0123456789abcdef", theirs)
        is None
    )
    assert wire.their_custom_id("MJ::Outpaint::75::1::0123456789abcdef::SOLO", theirs) is None


@pytest.mark.parametrize(
    ("title", "description", "code", "refused", "health"),
    [
        ("Banned prompt detected", "against our community standards", "BANNED_PROMPT", False, ""),
        ("Invalid parameter", "Unrecognized parameter(s): `--x`", "INVALID_PARAMETER", False, ""),
        ("Job queue full", "wait", "UPSTREAM_ERROR", True, ""),
        (
            "Credits exhausted",
            "You are out of fast hours.",
            "FAST_HOURS_EXHAUSTED",
            True,
            "fast_hours_exhausted",
        ),
        ("Action needed to continue", "CAPTCHA", "NEEDS_VERIFICATION", True, "needs_verification"),
        ("Subscription required", "", "ACCOUNT_UNAVAILABLE", True, "needs_verification"),
        ("Blocked", "You have been blocked", "ACCOUNT_UNAVAILABLE", True, "banned"),
        ("Action not allowed", "", "UPSTREAM_REJECTED", False, ""),
        ("Something new", "??", "UPSTREAM_ERROR", False, ""),
    ],
    ids=[
        "banned",
        "invalid",
        "queue",
        "fast",
        "captcha",
        "subscription",
        "blocked",
        "not-allowed",
        "other",
    ],
)
def test_error_embeds_are_classified(
    title: str, description: str, code: str, refused: bool, health: str
) -> None:
    failure = wire.classify_error(title, description)
    assert (failure.error_code, failure.refused, failure.health) == (code, refused, health)
    assert failure.reason


def test_seed_and_hash_are_read_from_messages() -> None:
    assert (
        wire.seed_from("**Job ID**: 3c6d3742-28bb-4354-a735-c815d82c4184\n**seed** 98765") == 98765
    )
    assert wire.seed_from("no seed here") is None
    message = {"attachments": [{"filename": "user_a_cat_3c6d3742-28bb-4354-a735-c815d82c4184.png"}]}
    assert wire.job_hash(message) == "3c6d3742-28bb-4354-a735-c815d82c4184"
