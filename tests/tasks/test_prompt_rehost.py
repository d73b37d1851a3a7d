"""Image URLs in prompts are fetched through the SSRF guard and re-hosted (issue 17)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.core.errors import ValidationFailed
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import ModalInput, task_press
from apps.tasks.services.submit import task_submit
from apps.tasks.storage import file_url, read_file

from .helpers import png_bytes, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

STYLE = png_bytes((20, 40, 220), (40, 40))
CHARACTER = png_bytes((220, 40, 20), (32, 48))


@pytest.fixture
def image_server() -> Iterator[str]:
    """PNGs at /style.png and /char.png, a text file at /notes.txt, 404 elsewhere."""
    files = {"/style.png": STYLE, "/char.png": CHARACTER, "/notes.txt": b"not an image"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def rehosting(settings) -> None:
    settings.REHOST_PROMPT_URLS = True
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the test server is on loopback


@pytest.fixture
def caller(organization, live_key, fund) -> Caller:
    fund(organization, 1_000_000)
    sandbox_account()
    return Caller(organization=organization, api_key=live_key.api_key)


def test_foreign_urls_are_fetched_stored_and_replaced_by_ours(caller, rehosting, image_server):
    style, char = f"{image_server}/style.png", f"{image_server}/char.png"
    prompt = f"{char} a knight --sref {style}::2 --cref {char} --cw 40 --v 6.1"
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task
    assert task.prompt == prompt  # as written, for the client
    assert image_server not in task.prompt_en
    ours = task.prompt_en.split()[0]
    assert ours.startswith("http://testserver/files/inputs/")
    assert read_file(ours.split("/files/", 1)[1]) == CHARACTER
    sref = task.prompt_en.split("--sref ", 1)[1].split()[0]
    assert sref.endswith("::2") and read_file(sref[:-3].split("/files/", 1)[1]) == STYLE
    assert task.prompt_en.count(ours) == 2  # the image prompt and --cref: one copy
    assert task.properties["finalPrompt"] == task.prompt_en
    assert task.inputs == []  # references are not reference images sent as files
    assert run_to_completion(task.pk).status == Status.SUCCESS


def test_our_own_urls_are_left_alone(caller, rehosting, image_server):
    from apps.tasks import storage

    name = storage.store_input(data=STYLE, ext="png")
    url = file_url(name)
    task = task_submit(
        caller=caller, action=Action.IMAGINE, prompt=f"a knight --sref {url} --v 7"
    ).task
    assert task.prompt_en == f"a knight --sref {url} --v 7"


@pytest.mark.parametrize(
    ("path", "private_ok", "message"),
    [
        (
            "/style.png",
            False,
            "prompt: The URL resolves to a private, loopback, link-local or otherwise "
            "non-public address, which is not allowed.",
        ),
        (
            "/gone.png",
            True,
            "prompt: the image could not be downloaded (The URL answered with HTTP 404.).",
        ),
    ],
)
def test_a_url_that_cannot_be_used_refuses_the_request_with_nothing_changed(
    caller, rehosting, image_server, settings, path, private_ok, message
):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = private_ok
    with pytest.raises(ValidationFailed) as caught:
        task_submit(
            caller=caller,
            action=Action.IMAGINE,
            prompt=f"a knight --sref {image_server}{path} --v 7",
        )
    assert caught.value.message == message
    assert Task.objects.count() == 0
    assert not LedgerEntry.objects.filter(kind=EntryKind.HOLD).exists()


def test_a_url_that_is_not_an_image_is_refused(caller, rehosting, image_server):
    with pytest.raises(ValidationFailed) as caught:
        task_submit(
            caller=caller,
            action=Action.IMAGINE,
            prompt=f"{image_server}/notes.txt a knight",
        )
    assert caught.value.message == (
        f"prompt: {image_server}/notes.txt cannot be used: it is not an image; send a PNG, "
        "JPEG, WEBP or GIF."
    )
    assert Task.objects.count() == 0


def test_a_remix_prompt_is_rehosted_too(caller, rehosting, image_server):
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a knight").task.pk
    )
    outcome = task_press(
        caller=caller,
        parent_id=grid.pk,
        custom_id=next(b["custom_id"] for b in grid.buttons if b["label"] == "V1"),
        modal=ModalInput(prompt=f"a knight --sref {image_server}/style.png --v 7"),
    )
    assert image_server not in outcome.task.prompt_en
    assert "http://testserver/files/inputs/" in outcome.task.prompt_en
