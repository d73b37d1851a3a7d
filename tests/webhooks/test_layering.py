"""The webhook outbox is a leaf (docs STYLE, "Direction of imports"), and Celery still finds it.

Read from the source with ``ast`` (no import needed), so an import hidden inside a function or
behind ``importlib`` is caught as well as a plain one.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import apps

APPS_DIR = Path(apps.__file__).parent
WEBHOOKS_DIR = APPS_DIR / "webhooks"
#: What the outbox may never depend on: everything above it.
ABOVE_THE_OUTBOX = ("apps.tasks", "apps.billing", "apps.protocols", "apps.engines")
#: The outbox proper (the admin and the Celery entry points are its edges).
OUTBOX_MODULES = (
    "apps.webhooks.services",
    "apps.webhooks.delivery",
    "apps.webhooks.selectors",
    "apps.webhooks.models",
)
TASK_NAMES = ("webhooks.deliver", "webhooks.deliver_due", "webhooks.purge")


def _module_name(path: Path) -> str:
    parts = path.relative_to(APPS_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path, module_name: str | None = None) -> list[tuple[int, str, bool]]:
    """(line, absolute module imported, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in inside) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module, id(node) in inside))
            # ``from apps import tasks`` imports the package ``apps.tasks``.
            found += [
                (node.lineno, f"{module}.{alias.name}", id(node) in inside) for alias in node.names
            ]
    return found


def _webhook_sources() -> list[Path]:
    return sorted(p for p in WEBHOOKS_DIR.rglob("*.py") if "migrations" not in p.parts)


def test_the_walk_sees_relative_and_nested_imports(tmp_path):
    # The walk itself must be able to fail: a nested, relative import of the task domain.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ..tasks import models\n    import importlib\n")
    found = _imported_names(sample, "apps.webhooks.sample")
    assert (2, "apps.tasks.models", True) in found
    assert (3, "importlib", True) in found


@pytest.mark.parametrize("path", _webhook_sources(), ids=lambda p: p.name)
def test_no_webhooks_module_imports_from_above(path):
    offending = [
        (line, module)
        for line, module, _ in _imported_names(path)
        if module.startswith(ABOVE_THE_OUTBOX) or module == "importlib"
    ]
    assert offending == []


@pytest.mark.parametrize("path", _webhook_sources(), ids=lambda p: p.name)
def test_only_the_celery_entry_points_import_inside_functions(path):
    lazy = [(line, module) for line, module, nested in _imported_names(path) if nested]
    if path.name == "workers.py":
        # Entry points import their service in the body, and nothing else.
        assert {module for _, module in lazy} <= {
            "apps.webhooks.delivery",
            "apps.webhooks.delivery.events_deliver",
            "apps.webhooks.delivery.deliveries_drain",
            "apps.webhooks.delivery.deliveries_dispatch_due",
            "apps.webhooks.services",
            "apps.webhooks.services.webhook_messages_purge",
        }
        assert lazy
    else:
        assert lazy == []


def test_nothing_imports_the_celery_entry_points():
    # Services send by task name through apps.core.messaging; importing the entry points from
    # below would bring the delivery <-> services <-> tasks cycle back.
    importers = [
        (_module_name(path), line)
        for path in sorted(APPS_DIR.rglob("*.py"))
        for line, module, _ in _imported_names(path)
        if module.startswith("apps.webhooks.workers")
    ]
    assert importers == []


def test_the_outbox_reaches_nothing_above_it_even_indirectly():
    graph = grimp.build_graph("apps", cache_dir=None, exclude_type_checking_imports=True)
    chains = {
        (source, target): graph.find_shortest_chain(importer=source, imported=target)
        for source in OUTBOX_MODULES
        for target in graph.modules
        if target.startswith(ABOVE_THE_OUTBOX)
    }
    assert {pair: chain for pair, chain in chains.items() if chain} == {}
    # And the webhooks package takes part in no import cycle.
    for module in graph.modules:
        if module.startswith("apps.webhooks."):
            for imported in graph.find_modules_directly_imported_by(module):
                assert not graph.chain_exists(importer=imported, imported=module), (
                    module,
                    imported,
                )


def test_celery_registers_the_entry_points_under_their_names():
    """A fresh process, as a worker starts: autodiscovery alone must find ``workers`` modules."""
    script = (
        "import django, json; django.setup();"
        "from config.celery import app; app.loader.import_default_modules();"
        f"print(json.dumps({{n: app.tasks[n].__module__ for n in {list(TASK_NAMES)!r} "
        "if n in app.tasks}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APPS_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    registered = json.loads(completed.stdout.strip().splitlines()[-1])
    assert registered == dict.fromkeys(TASK_NAMES, "apps.webhooks.workers")
