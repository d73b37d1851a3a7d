"""The shared wait of the integration tests: returns as soon as it can, fails loudly."""

from __future__ import annotations

import time

import pytest

from .integration_support import wait_for


def test_wait_for_returns_the_first_truthy_value_and_runs_between_until_then() -> None:
    answers = iter([None, 0, [], "ready"])
    between: list[int] = []
    assert wait_for(lambda: next(answers), between=lambda: between.append(1), interval=0) == "ready"
    assert between == [1, 1, 1]


def test_wait_for_does_not_sleep_once_the_condition_holds() -> None:
    started = time.monotonic()
    assert wait_for(lambda: True, interval=30) is True
    assert time.monotonic() - started < 1


def test_wait_for_names_what_it_waited_for_when_the_bound_passes() -> None:
    states = iter(range(1000))
    with pytest.raises(AssertionError, match=r"still waiting after 0 s for state \d+"):
        wait_for(lambda: False, timeout=0.05, interval=0.01, what=lambda: f"state {next(states)}")
