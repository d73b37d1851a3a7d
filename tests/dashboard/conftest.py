"""Fixtures of the dashboard tests: a real Chromium through Playwright, screenshots, a real
Celery worker (shared with the task-engine tests) and a loopback webhook receiver."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration_support import celery_worker, celery_worker_factory  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("MJGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium (scripts/browser.sh installs it); Playwright never downloads one."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/browser.sh")
        pytest.skip(f"Chromium is missing at {CHROMIUM}: run scripts/browser.sh")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


#: Reports every Content-Security-Policy violation to the console, besides Chromium's own line.
CSP_REPORTER = """document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked "
    + (event.blockedURI || "inline code") + " at " + event.sourceFile + ":" + event.lineNumber);
});"""


def is_csp_violation(message: Any) -> bool:
    text = message.text
    return message.type == "error" and (
        text.startswith("CSP violation:") or "Content Security Policy" in text
    )


@pytest.fixture
def csp_violations() -> list[str]:
    """The Content-Security-Policy violations the pages of ``new_page`` reported so far."""
    return []


@pytest.fixture
def new_page(browser: Any, csp_violations: list[str]) -> Iterator[Callable[[], Any]]:
    """Fresh browser contexts (separate cookies = separate people), closed after the test.

    Every page of them, tabs opened later included, works under the pages'
    Content-Security-Policy: a violation reported in a console fails the test."""
    contexts: list[Any] = []
    violations = csp_violations

    def make() -> Any:
        context = browser.new_context(viewport=DESKTOP, locale="en-US")
        context.set_default_timeout(15_000)
        context.add_init_script(CSP_REPORTER)
        context.on(
            "console",
            lambda message: (
                violations.append(f"{message.page.url if message.page else '?'}: {message.text}")
                if is_csp_violation(message)
                else None
            ),
        )
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)


@pytest.fixture
def screenshot() -> Callable[[Any, str], None]:
    """Write ``<name>-desktop.png`` and ``<name>-phone.png`` of the page's current URL."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> None:
        page.set_viewport_size(DESKTOP)
        page.screenshot(
            path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True, animations="disabled"
        )
        page.set_viewport_size(PHONE)
        page.screenshot(
            path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True, animations="disabled"
        )
        page.set_viewport_size(DESKTOP)

    return take


class Receiver:
    """Records POSTs on loopback and answers 200, like a customer's webhook endpoint."""

    def __init__(self) -> None:
        receiver = self
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length).decode() if length else "",
                }
                with receiver.lock:
                    receiver.requests.append(request)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def shared_media(settings: Any, tmp_path: Path) -> Path:
    """One media folder for the live server and the worker (results written, then served)."""
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media
    return media
