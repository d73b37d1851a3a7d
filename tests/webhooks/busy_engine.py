"""A stand-in for a long engine job, loaded into a test's engine worker with ``--include``.

Each job writes ``<name>.started`` into the folder it is given, holds its worker slot for
``seconds`` and then writes ``<name>.done``: a test can tell that every slot of the engine
worker is taken, and still taken, while something else happens.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery import shared_task

BUSY_TASK = "tests.busy_engine_job"


@shared_task(name=BUSY_TASK, ignore_result=True)
def busy_engine_job(folder: str, name: str, seconds: float) -> None:
    (Path(folder) / f"{name}.started").write_text("")
    time.sleep(seconds)
    (Path(folder) / f"{name}.done").write_text("")
