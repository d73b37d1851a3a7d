"""scripts/devrun.py prints the demo banner again once every process is up, below their
start-up output where the newcomer sees it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def devrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("devrun_under_test", ROOT / "scripts/devrun.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "devrun_under_test", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "VAR", tmp_path)
    return module


def test_the_banner_is_printed_once_after_the_web_server_answers(
    devrun: ModuleType, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo-banner.txt").write_text("\nmjgate demo is ready\n  Dashboard: x\n")
    answers = iter([False, False, True])
    monkeypatch.setattr(devrun, "_web_answers", lambda: next(answers, True))
    monkeypatch.setattr(devrun, "BANNER_SETTLE", 0.0)
    banner = devrun.Banner()
    banner.tick()
    banner.tick()
    assert capsys.readouterr().out == ""  # the web server is not up yet
    banner.tick()
    out = capsys.readouterr().out
    assert "mjgate demo is ready" in out and "Dashboard: x" in out
    assert out.rstrip().endswith("[devrun] all processes are up - press Ctrl-C to stop")
    banner.tick()
    assert capsys.readouterr().out == ""  # once


def test_without_a_seed_the_banner_still_says_where_to_go(
    devrun: ModuleType, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devrun, "_web_answers", lambda: False)
    monkeypatch.setattr(devrun, "BANNER_WAIT", 0.0)
    devrun.Banner().tick()  # the web server never answered: shown after BANNER_WAIT anyway
    assert f"mjgate is running: http://127.0.0.1:{devrun.PORT}/" in capsys.readouterr().out
