"""Plain options typed as text become the JSON values they spell only when nothing is lost:
Discord ids (18-19 digit snowflakes, above 2**53) stay the strings given, so a JavaScript
client reading them back and PATCHing them unchanged keeps the account on its channel."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from apps.accounts.models import MembershipTier, Organization
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_clean

pytestmark = pytest.mark.django_db

GUILD, CHANNEL = "600000000000000001", "700000000000000003"
TOKEN = "mfa." + "x" * 40


@pytest.fixture
def premium(organization: Organization) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    return organization


def test_discord_ids_come_back_as_the_strings_given_and_survive_a_round_trip(
    api_client, premium, live_key
):
    client = api_client
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    created = client.post(
        "/api/v1/upstream-accounts",
        {
            "name": "my discord",
            "engine": "discord",
            "modes": ["FAST"],
            "options": {"guild_id": GUILD, "channel_id": CHANNEL, "niji_channel_id": "1" * 19},
            "secrets": {"token": TOKEN},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    options = created.json()["options"]
    assert (options["guild_id"], options["channel_id"]) == (GUILD, CHANNEL)
    # What a JavaScript client sends back after reading the answer (JSON.parse, then edit).
    read_back: dict[str, Any] = json.loads(json.dumps(options))
    patched = client.patch(
        f"/api/v1/upstream-accounts/{created.json()['id']}",
        {"options": {**read_back, "submit_confirm_seconds": "5"}},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    stored = UpstreamAccount.objects.get(owner=premium)
    assert (stored.options["guild_id"], stored.options["channel_id"]) == (GUILD, CHANNEL)
    assert stored.options["niji_channel_id"] == "1" * 19
    assert stored.options["submit_confirm_seconds"] == 5


def test_the_command_line_keeps_ids_as_text_and_types_small_numbers_and_switches():
    out = StringIO()
    call_command(
        "createupstream",
        "--engine", "discord",
        "--name", "cli-discord",
        "--modes", "FAST",
        "--option", f"token={TOKEN}",
        "--option", f"guild_id={GUILD}",
        "--option", f"channel_id={CHANNEL}",
        "--option", "submit_confirm_seconds=2.5",
        "--option", "fast_fallback_to_relax=true",
        "--json",
        stdout=out,
    )  # fmt: skip
    options = json.loads(out.getvalue())["options"]
    assert options == {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "submit_confirm_seconds": 2.5,
        "fast_fallback_to_relax": True,
    }


#: Text typed for an option, and what is stored for it.
TYPED = [
    ("8", 8),
    ("-3", -3),
    ("0.25", 0.25),
    (" TRUE ", True),
    (str(2**53 - 1), 2**53 - 1),
    (str(2**53), str(2**53)),  # a JSON number would no longer be exact
    (GUILD, GUILD),
    ("0123", "0123"),  # not the number's own spelling: kept as written
    ("+5", "+5"),
    ("1e400", "1e400"),  # no JSON number
    ("nan", "nan"),
    ("infinity", "infinity"),
    ("1_000", "1_000"),
]


def test_which_texts_become_numbers():
    stored = []
    for text, _ in TYPED:
        # ``user_agent`` takes any text: what is stored is exactly what the typing made of it.
        clean = upstream_account_clean(
            engine="discord",
            name="typed",
            modes=["FAST"],
            options={"guild_id": GUILD, "channel_id": CHANNEL, "user_agent": text},
            secrets={"token": TOKEN},
        )
        value = clean.options["user_agent"]
        stored.append((text, value, type(value)))
    assert stored == [(text, value, type(value)) for text, value in TYPED]
