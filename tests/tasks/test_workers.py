"""Celery finds the pipeline's entry points in apps/tasks/workers.py, under their old names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

import apps.tasks.workers as workers

NAMES = {
    "tasks.dispatch",
    "tasks.start_job",
    "tasks.poll_job",
    "tasks.finish_job",
    "tasks.derive_files",
    "tasks.sweep",
}


def test_celery_autodiscovery_registers_the_entry_points_by_name():
    """In a fresh process, as a worker starts: nothing imported the module beforehand."""
    script = (
        "import django; django.setup()\n"
        "import sys\n"
        "from config.celery import app\n"
        "assert 'apps.tasks.workers' not in sys.modules\n"
        "app.loader.import_default_modules()\n"
        "for name in sorted(n for n in app.tasks if n.startswith('tasks.')):\n"
        "    print(name, app.tasks[name].run.__module__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=settings.BASE_DIR,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = dict(line.split() for line in done.stdout.splitlines())
    assert found == dict.fromkeys(NAMES, "apps.tasks.workers")


def test_the_pipeline_never_imports_its_entry_points():
    """Entry points import their services, never the reverse (messages go by name)."""
    tasks_app = Path(workers.__file__).parent
    for path in sorted(tasks_app.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.module
            for alias in node.names
        }
        assert not ({"workers", "apps.tasks.workers", "tasks", "apps.tasks.tasks"} & imported), (
            path.name
        )
