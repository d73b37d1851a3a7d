"""The Celery processes start from byte-code, not source (issue 15, P6).

They run under ``python -OO`` (config/celery_cli.py), which loads ``.opt-2.pyc`` caches that pip
never writes. Where Python may not write caches itself (``PYTHONDONTWRITEBYTECODE``, as this
project's machines and its image set it, or a read-only install) each process would compile
every module it imports from source at start-up: seconds of CPU, and heap each prefork pool
process inherits. ``scripts/bootstrap.sh`` compiles the dependencies for ``-OO`` once per
install (``docker/Dockerfile`` the same in the image); this boots a worker's app as
``test_worker_boot_memory`` does and finds a cache for every dependency it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from config.celery_cli import CELERY_PROCESS_ENV

from .test_worker_boot_memory import BOOT, ROOT

MISSING = """
import importlib.util, json, os, sys
site = sys.argv[1]
missing = sorted(
    name
    for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and module.__file__.endswith(".py")
    and module.__file__.startswith(site)
    and not os.path.exists(importlib.util.cache_from_source(module.__file__, optimization=2))
)
print(json.dumps({"missing": missing, "loaded": len(sys.modules)}))
"""


def test_every_dependency_a_worker_loads_has_its_optimized_byte_code() -> None:
    site = sysconfig.get_paths()["purelib"]
    boot = BOOT.rsplit("print(json.dumps(", 1)[0]  # the boot, without its own report
    completed = subprocess.run(
        [sys.executable, "-OO", "-c", boot + MISSING, site],
        cwd=ROOT,
        env={**os.environ, CELERY_PROCESS_ENV: "1", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["loaded"] > 500  # the boot ran: Django, Celery, kombu, the apps
    assert report["missing"] == [], "run scripts/bootstrap.sh"


def test_the_image_compiles_the_same() -> None:
    dockerfile = (Path(ROOT) / "docker" / "Dockerfile").read_text()
    build, runtime = dockerfile.split("AS runtime", 1)
    assert "compileall -q -j 0 -o 2 /opt/venv/lib" in build
    # The standard library and the app at both levels, before the switch to the app's user.
    before_user = runtime.split("USER mjgate", 1)[0]
    assert before_user.count("compileall -q -j 0 -o 0 -o 2") == 2
    assert "apps config docker manage.py" in before_user
