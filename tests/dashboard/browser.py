"""What the browser tests of issue 16 check on every page: no horizontal overflow at desktop
and phone width (with screenshots kept under artifacts/), and no serious or critical
accessibility violation found by axe-core (vendored in tests/dashboard/vendor, no CDN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import DESKTOP, PHONE, SCREENSHOTS

AXE = Path(__file__).resolve().parent / "vendor" / "axe-4.14.1.min.js"
PASSWORD = "pass-1234-word"


def sign_in(page: Any, base: str, email: str, *, then: str = "/") -> None:
    page.goto(f"{base}/accounts/login/?next={then}")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"{base}{then}")


def overflow(page: Any) -> dict[str, int]:
    return dict(
        page.evaluate(
            "() => ({scrollWidth: document.documentElement.scrollWidth,"
            " innerWidth: window.innerWidth})"
        )
    )


def fits(page: Any, name: str, problems: list[str] | None = None) -> None:
    """At 1280 and at 375 px: nothing wider than the window; a screenshot of each. A page that
    overflows goes into ``problems`` if given, else fails the test at once."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(50)  # one layout pass after the resize
        widths = overflow(page)
        page.screenshot(
            path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True, animations="disabled"
        )
        if problems is not None:
            if widths["scrollWidth"] > widths["innerWidth"]:
                problems.append(f"{name} overflows horizontally at {label} width: {widths}")
            continue
        assert widths["scrollWidth"] <= widths["innerWidth"], (
            f"{name} overflows horizontally at {label} width: {widths}"
        )
    page.set_viewport_size(DESKTOP)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical violations axe-core finds on the page as it is now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated, not added as a <script> tag: the pages' Content-Security-Policy refuses
        # inline script, and a refused tag would count as a CSP violation (conftest.new_page).
        page.evaluate(AXE.read_text())
    results = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return [v for v in results if v["impact"] in ("serious", "critical")]


def accessible(page: Any, name: str, problems: list[str] | None = None) -> None:
    """No serious or critical axe violation; into ``problems`` if given, else asserted."""
    found = axe_violations(page)
    if problems is not None:
        if found:
            problems.append(f"axe on {name}: " + json.dumps(found))
        return
    assert not found, f"axe on {name}: " + json.dumps(found, indent=1)
