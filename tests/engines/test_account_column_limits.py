"""Operator input beyond what an upstream account's columns hold is a clear error naming the
setting, and nothing is stored (it was a database traceback)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.core.errors import ValidationFailed
from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_update
from tests.factories import UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--queue-size", "40000"), "queue size must be between 0 and 32767."),
        (
            ("--run-timeout", str(2**31)),
            f"run timeout must be at most {2**31 - 1} seconds.",
        ),
        (("--name", "n" * 101), "An upstream account's name has at most 100 characters."),
    ],
)
def test_createupstream_refuses_values_its_columns_cannot_hold(args, message):
    before = UpstreamAccount.objects.count()
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "createupstream", "--engine", "sandbox", "--name", "too-big", "--modes", "FAST",
            *args, stdout=StringIO(),
        )  # fmt: skip
    assert str(excinfo.value) == message
    assert UpstreamAccount.objects.count() == before


def test_an_operators_change_is_checked_the_same_way():
    account = UpstreamAccountFactory(queue_size=10)
    with pytest.raises(ValidationFailed) as excinfo:
        upstream_account_update(
            account=account,
            name=account.name,
            modes=list(account.modes),
            concurrency=account.concurrency,
            queue_size=40000,
            run_timeout_seconds=account.run_timeout_seconds,
            options=dict(account.options),
        )
    assert excinfo.value.details == {"field": "queue_size"}
    assert UpstreamAccount.objects.get(pk=account.pk).queue_size == 10
    # The largest values the columns hold are taken.
    upstream_account_update(
        account=account,
        name="n" * 100,
        modes=list(account.modes),
        concurrency=account.concurrency,
        queue_size=32767,
        run_timeout_seconds=2**31 - 1,
        options=dict(account.options),
    )
    assert (account.name, account.queue_size, account.run_timeout_seconds) == (
        "n" * 100,
        32767,
        2**31 - 1,
    )
