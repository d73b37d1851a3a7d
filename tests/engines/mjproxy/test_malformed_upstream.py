"""An upstream's task JSON is its word, not ours: a field of the wrong type or an absurd value
(``buttons`` that is a number, a ``progress`` of 400 digits, a seed we cannot use, JSON nested
past the parser's depth) is read as absent and the rest applied. The callback route answers,
a poll step does not crash (which would count towards failing the task as an internal error)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.engines.base import PermanentEngineError, PollResult
from apps.engines.mjproxy import mapping
from apps.engines.mjproxy.client import MjproxyClient
from apps.engines.mjproxy.services import mjproxy_callback_token_ensure
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import POLL_CRASHES, UPSTREAM_SEED
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.fakes import mjproxy_server

from .helpers import mjproxy_account, poll, start

ENDLESS = "9" * 400  # float("9" * 400) is inf, and int(inf) raises OverflowError


def _imagine(organization, live_key) -> Task:
    caller = Caller(organization=organization, api_key=live_key.api_key)
    task = start(task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


# --- the mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ENDLESS + "%", 100),
        (int(ENDLESS), 100),
        (math.inf, 100),
        (-5, 0),
        ({"progress": 50}, 0),
        ([50], 0),
    ],
)
def test_progress_of_any_type_is_a_number_from_0_to_100(value, expected):
    assert mapping.parse_progress(value) == expected


@pytest.mark.parametrize(
    "buttons",
    [1, 1.5, True],
    ids=["number", "float", "bool"],
)
def test_buttons_that_are_not_a_list_of_objects_are_read_as_none(buttons):
    upstream = {"status": "SUCCESS", "imageUrl": "/images/1.png", "buttons": buttons}
    view = mapping.upstream_view(upstream, action=Action.IMAGINE)
    assert (view.status, view.image_url, view.buttons) == (PollResult.SUCCESS, "/images/1.png", [])


def test_text_fields_of_another_type_are_read_as_absent():
    running = mapping.upstream_view({"status": 5, "progress": "10%"}, action=Action.IMAGINE)
    assert (running.status, running.progress) == (PollResult.RUNNING, 10)
    done = mapping.upstream_view(
        {
            "status": "SUCCESS",
            "imageUrl": {"url": "http://169.254.169.254/"},
            "properties": {"finalPrompt": ["a", "list"]},
            "promptEn": 42,
        },
        action=Action.DESCRIBE,
    )
    assert (done.status, done.image_url, done.properties) == (PollResult.SUCCESS, "", {})
    failed = mapping.upstream_view(
        {"status": "FAILURE", "failReason": {"why": "x"}}, action=Action.IMAGINE
    )
    assert failed.fail_reason == "The upstream failed the job: no reason given"


def test_a_submit_code_too_large_for_an_int_is_an_answer_we_do_not_understand():
    with pytest.raises(PermanentEngineError) as caught:
        mapping.submit_outcome({"code": math.inf, "result": "1"})
    assert caught.value.error_code == ErrorCode.UPSTREAM_REJECTED
    assert caught.value.message == "The upstream rejected the request (code -1): no reason given"


# --- callbacks and polls -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("odd", "progress"),
    [
        ({"status": "IN_PROGRESS", "progress": "10%", "buttons": 1}, 10),
        ({"status": "IN_PROGRESS", "progress": ENDLESS + "%"}, 99),
    ],
    ids=["buttons_is_a_number", "progress_overflows_float"],
)
def test_a_callback_with_a_malformed_field_is_answered_and_the_rest_applied(
    funded, live_key, fake, odd, progress
):
    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    token = mjproxy_callback_token_ensure(account_id=account.pk)
    body = {"id": task.upstream_job_id, **odd}
    response = Client(raise_request_exception=False).post(
        f"/engines/mjproxy/callback/{account.pk}/{token}",
        data=json.dumps(body),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.progress) == (Status.IN_PROGRESS, progress)


@pytest.mark.django_db
def test_a_poll_with_an_endless_progress_keeps_polling(funded, live_key, fake):
    mjproxy_account(fake)
    task = _imagine(funded, live_key)
    fake.set_progress(task.upstream_job_id, ENDLESS)  # served as "999…9%"
    task = poll(task.pk)
    assert (task.status, task.progress) == (Status.IN_PROGRESS, 99)
    assert POLL_CRASHES not in task.engine_state


@pytest.mark.django_db
def test_a_finished_job_whose_buttons_are_a_number_still_succeeds(funded, live_key, fake):
    mjproxy_account(fake)
    task = _imagine(funded, live_key)
    fake.finish(task.upstream_job_id)
    fake.jobs[task.upstream_job_id].buttons = 1  # type: ignore[assignment]
    done = poll(task.pk)
    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    assert done.engine_state["buttons"] == []
    assert [b["label"] for b in done.buttons][:4] == ["U1", "U2", "U3", "U4"]


# --- seeds ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("told", "seed"),
    [
        ("\u00b2", None),  # a digit to str.isdigit, not to int()
        ("9" * 25, None),  # past the task's BIGINT column
        ("4294967296", None),  # 2**32: beyond Midjourney's seeds
    ],
)
def test_a_seed_the_upstream_tells_is_kept_only_if_it_is_a_midjourney_seed(
    funded, live_key, fake, monkeypatch, told, seed
):
    mjproxy_account(fake)
    task = _imagine(funded, live_key)
    fake.finish(task.upstream_job_id)
    assert poll(task.pk).status == Status.SUCCESS
    monkeypatch.setattr(mjproxy_server, "seed_of", lambda job_id: told)
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    answer = client.get(f"/mj/task/{task.pk}/image-seed")
    assert answer.status_code == 200
    assert answer.json()["result"] == (None if seed is None else str(seed))
    stored = Task.objects.get(pk=task.pk)
    assert (stored.seed, stored.engine_state[UPSTREAM_SEED]) == (seed, seed)


# --- the client ----------------------------------------------------------------------------------


@pytest.fixture
def nested_json_server() -> Iterator[str]:
    """Answers every request with 200 and an array nested 100,000 deep."""
    body = b"[" * 100_000 + b"]" * 100_000

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_nested_past_the_parsers_depth_is_an_unreadable_answer(nested_json_server):
    client = MjproxyClient(base_url=nested_json_server, secret="s", allow_private=True)
    answer = client.get("/mj/task/1/fetch")
    assert (answer.status, answer.data) == (200, None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # past json's recursion limit
        b'{"id": "x", "progress": "50%", "failReason": "\\u0000"}',  # text PostgreSQL refuses
        b'{"id": "\xff"}',  # not UTF-8
    ],
    ids=["nested", "nul", "not-utf8"],
)
def test_a_callback_body_past_the_parsers_limits_is_a_400(funded, live_key, fake, body):
    account = mjproxy_account(fake, callbacks=True)
    _imagine(funded, live_key)
    token = mjproxy_callback_token_ensure(account_id=account.pk)
    response = Client(raise_request_exception=False).post(
        f"/engines/mjproxy/callback/{account.pk}/{token}",
        data=body,
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response.json() == {"error": "The body must be a task JSON object."}
