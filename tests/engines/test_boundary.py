"""The engine boundary: engines are pure adapters that never reach into the task app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import apps.engines

ENGINES = Path(apps.engines.__file__).parent
#: The task app's pure vocabulary: no models, no lifecycle, no services, no storage.
ALLOWED_FROM_TASKS = {
    "apps.tasks.enums",
    "apps.tasks.buttons",
    "apps.tasks.prompt",
    "apps.tasks.actions",
    "apps.tasks.errors",
    # The remix params' names (a pure leaf, like the enums).
    "apps.tasks.remix",
}
#: Not engine code: the operator's admin page for accounts is an edge (STYLE: operator admin
#: sits on top with the protocols); it counts each account's tasks for the list.
#: Nor the tenant-facing services and selectors of organizations' own accounts: they sit beside
#: the operator's (``apps.engines.services``) as services, count an account's running tasks and
#: refuse to delete a busy one; no engine imports them (lint-imports' engines contract).
EXEMPT = {ENGINES / "admin.py", ENGINES / "own_services.py", ENGINES / "own_selectors.py"}
#: (The discord gateway's management command, the edge that feeds the lifecycle, lives in
#: apps/tasks/management/commands/, so nothing else under apps/engines is exempt.)


def _module_of(path: Path) -> str:
    relative = path.relative_to(ENGINES.parent.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with the line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from apps.tasks import models`` imports the submodule too.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _forbidden(module: str) -> bool:
    if module == "importlib" or module.startswith("importlib."):
        return True  # a hop no tool can follow
    if module == "apps.tasks" or not module.startswith("apps.tasks."):
        return False
    return not any(module == ok or module.startswith(f"{ok}.") for ok in ALLOWED_FROM_TASKS)


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINES.rglob("*.py") if "migrations" not in p.parts)


def test_the_walk_sees_the_engines():
    names = {_module_of(p) for p in engine_modules()}
    assert {"apps.engines.base", "apps.engines.sandbox.engine", "apps.engines.mjproxy.engine"} <= (
        names
    )


@pytest.mark.parametrize(
    "path", [p for p in engine_modules() if p not in EXEMPT], ids=lambda p: _module_of(p)
)
def test_no_engine_module_imports_task_models_lifecycle_storage_or_services(path: Path):
    bad = [f"line {line}: {module}" for line, module in _imports(path) if _forbidden(module)]
    assert bad == []


@pytest.mark.parametrize("module", sorted(ALLOWED_FROM_TASKS))
def test_the_task_vocabulary_engines_may_use_is_a_leaf(module: str):
    """What engines may import from the task app (its vocabulary: enums, the table of actions,
    button ids, prompts, domain errors) imports nothing else of it: no models, no state."""
    path = ENGINES.parent / "tasks" / f"{module.rsplit('.', 1)[1]}.py"
    reached = {name for _, name in _imports(path) if name.startswith("apps.tasks.")}
    assert {name for name in reached if _forbidden(name)} == set()


def test_the_check_catches_a_forbidden_import(tmp_path: Path):
    """The walk would fail on the imports this boundary forbids (it is not vacuous)."""
    assert _forbidden("apps.tasks.models")
    assert _forbidden("apps.tasks.lifecycle")
    assert _forbidden("apps.tasks.storage")
    assert _forbidden("apps.tasks.services")
    assert _forbidden("importlib")
    assert not _forbidden("apps.tasks.enums")
    sample = ENGINES / "sandbox" / "engine.py"
    lines = {module for _, module in _imports(sample)}
    assert "apps.engines.base" in lines  # relative and absolute imports are both resolved
    assert "apps.engines.sandbox.render" in lines
