"""The ledger is a leaf (docs STYLE, "Direction of imports"): everything may call it, it calls
nothing above it. ``User`` and ``Task`` appear in its signatures for typing only."""

from __future__ import annotations

import grimp

#: The task vocabulary (plain enums, no imports of the task domain) is all the ledger may see
#: of apps.tasks: prices are keyed by action and mode.
ALLOWED_FROM_TASKS = {"apps.tasks", "apps.tasks.enums"}
ABOVE = ("apps.tasks", "apps.protocols", "apps.engines", "apps.dashboard", "apps.operator")


def test_the_ledger_imports_nothing_above_it_at_runtime():
    graph = grimp.build_graph("apps", cache_dir=None, exclude_type_checking_imports=True)
    reached = {
        module
        for module in graph.find_upstream_modules("apps.billing.ledger")
        if module.startswith(ABOVE) and module not in ALLOWED_FROM_TASKS
    }
    assert reached == set()
    # With typing imports counted, the ledger does name Task (so the check above can fail).
    typed = grimp.build_graph("apps", cache_dir=None)
    assert "apps.tasks.models" in typed.find_upstream_modules("apps.billing.ledger")
