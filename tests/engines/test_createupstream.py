"""createupstream (SPEC §11): operators script upstream accounts with it."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.engines.models import Health, UpstreamAccount

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("createupstream", *args, stdout=out)
    return out.getvalue()


def raw_row(name: str) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT options::text, secrets FROM engines_upstreamaccount WHERE name = %s"
            if connection.vendor == "postgresql"
            else "SELECT options, secrets FROM engines_upstreamaccount WHERE name = %s",
            [name],
        )
        options, secrets = cursor.fetchone()
    return str(options), str(secrets)


def test_creates_a_sandbox_account_with_typed_options_and_prints_json(settings):
    output = run(
        "--engine",
        "sandbox",
        "--name",
        "sandbox-a",
        "--modes",
        "fast, NORMAL,turbo,FAST",
        "--concurrency",
        "5",
        "--queue-size",
        "7",
        "--run-timeout",
        "120",
        "--option",
        "duration=2.5",
        "--option",
        "fail_rate=0",
        "--option",
        "stall=false",
        "--json",
    )
    account = UpstreamAccount.objects.get(name="sandbox-a")
    assert json.loads(output) == {
        "id": account.pk,
        "name": "sandbox-a",
        "engine": "sandbox",
        "modes": ["FAST", "RELAX", "TURBO"],
        "concurrency": 5,
        "queue_size": 7,
        "run_timeout_seconds": 120,
        "options": {"duration": 2.5, "fail_rate": 0, "stall": False},
        "secrets": [],
    }
    assert (account.is_enabled, account.health, account.is_sandbox_pool) == (
        True,
        Health.HEALTHY,
        False,
    )


def test_defaults_and_human_output(settings):
    output = run("--engine", "sandbox", "--name", "plain")
    account = UpstreamAccount.objects.get(name="plain")
    assert output.strip() == (
        f"Created upstream account plain (id {account.pk}, engine sandbox, modes "
        "FAST,RELAX,TURBO, concurrency 3)."
    )
    assert (account.concurrency, account.queue_size, account.options) == (3, 10, {})
    assert account.run_timeout_seconds == int(settings.TASK_DEFAULT_RUN_TIMEOUT.total_seconds())


def test_credentials_are_stored_encrypted_and_never_in_options():
    output = run(
        "--engine",
        "sandbox",
        "--name",
        "with-secret",
        "--option",
        "secret=0123-s3cr3t-value",
        "--option",
        "token=tok=with=equals",
        "--option",
        "duration=1",
        "--json",
    )
    account = UpstreamAccount.objects.get(name="with-secret")
    assert account.options == {"duration": 1}
    # Exactly as given: a secret is never coerced to a number, "=" after the first is kept.
    assert account.secrets == {"secret": "0123-s3cr3t-value", "token": "tok=with=equals"}
    options, secrets = raw_row("with-secret")
    assert "s3cr3t" not in options and "s3cr3t" not in secrets
    assert "tok=with" not in secrets
    assert secrets.startswith("gAAAA")  # a Fernet token
    # The JSON names the stored credentials, never their values.
    assert json.loads(output)["secrets"] == ["secret", "token"]
    assert "s3cr3t" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--engine", "carrier-pigeon", "--name", "x"],
            "Unknown engine 'carrier-pigeon'. Known engines: ",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--modes", "FAST,SLOW"],
            "Unknown mode 'SLOW'. Use FAST, RELAX or TURBO.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--modes", " , "],
            "An upstream account must serve at least one mode.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--option", "duration"],
            "--option must be KEY=VALUE, got 'duration'.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--option", "=5"],
            "--option must be KEY=VALUE, got '=5'.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--option", "speed=5"],
            "Unknown sandbox option 'speed' (use duration, fail_rate, stall).",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--option", "fail_rate=2"],
            "fail_rate must be between 0 and 1.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--option", "duration=-1"],
            "duration must be between 0 and 3600 seconds.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--concurrency", "0"],
            "concurrency must be between 1 and 100.",
        ),
        (
            ["--engine", "sandbox", "--name", "x", "--run-timeout", "5"],
            "run timeout must be at least 10 seconds.",
        ),
        (
            ["--engine", "sandbox", "--name", "   "],
            "An upstream account needs a name.",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(args, message):
    with pytest.raises(CommandError) as info:
        run(*args)
    assert str(info.value).startswith(message)
    assert UpstreamAccount.objects.count() == 0


def test_a_duplicate_name_is_a_clear_error():
    run("--engine", "sandbox", "--name", "twice")
    with pytest.raises(CommandError) as info:
        run("--engine", "sandbox", "--name", "twice", "--concurrency", "9")
    assert str(info.value) == "An upstream account named 'twice' already exists."
    assert UpstreamAccount.objects.get().concurrency == 3
