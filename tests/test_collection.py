"""The suite's own plumbing: what pytest collects, and how it is marked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SLOW_BY_NATURE

ROOT = Path(__file__).resolve().parent.parent


def test_every_integration_and_browser_test_is_marked_slow(request: pytest.FixtureRequest) -> None:
    """``--fast`` (``-m "not slow"``) must never start a worker, a server or a browser."""
    natural = [
        item
        for item in request.session.items
        if any(item.get_closest_marker(name) for name in SLOW_BY_NATURE)
    ]
    assert [item.nodeid for item in natural if not item.get_closest_marker("slow")] == []


def _collected(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("PYTEST_ADDOPTS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return [line for line in run.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_two_processes_collect_the_same_test_ids() -> None:
    """pytest-xdist aborts a run when its workers collect different ids: parametrisation ids
    must not depend on the time, the hash seed or anything else that differs per process."""
    first = _collected("1")
    time.sleep(1.1)  # a new second: ids built from time.time() would change
    second = _collected("2")
    assert len(first) > 1000
    assert first == second, sorted(set(first) ^ set(second))[:20]
