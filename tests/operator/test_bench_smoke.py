"""The admin benchmark's seeding and measuring run (tiny N, in the test database).

The real run (``bench/admin_bench.py``, 100,000 tasks in its own database) is not part of the
suite: it measures, it does not assert times.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from apps.tasks.models import Task

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "admin_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("admin_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_benchmark_seeds_measures_and_reports_json():
    bench = load_bench()
    seeded = bench.seed(tasks=300, organizations=5, rng=random.Random(7))
    assert (seeded["tasks"], seeded["organizations"], seeded["accounts"]) == (300, 5, 6)
    assert Task.objects.count() == 300
    assert Task.objects.filter(status="NOT_START").count() == 40
    pages = bench.measure(runs=1)
    report = json.loads(json.dumps(bench.build_report(seeded=seeded, pages=pages, runs=1)))
    assert set(report["pages"]) == set(bench.BUDGET_MS)
    assert report["budget_ms"] == bench.BUDGET_MS
    for name, page in report["pages"].items():
        assert page["budget_ms"] == bench.BUDGET_MS[name]
        assert len(page["runs_ms"]) == 1
        assert page["median_ms"] > 0
        assert page["queries"] >= 1
        assert page["within_budget"] == (page["median_ms"] <= page["budget_ms"])
    assert report["within_budget"] == all(p["within_budget"] for p in report["pages"].values())
    # The baseline measured in the same run, and each page's ratio to it.
    assert report["baseline"]["median_ms"] > 0
    assert all(page["ratio_to_baseline"] > 0 for page in report["pages"].values())


def test_the_default_run_is_a_hundred_thousand_tasks():
    assert "--tasks" in BENCH.read_text()
    assert load_bench().parse_args([]).tasks == 100_000
