"""Accepting tasks: outcomes, modes, test keys, the tier limit and MODAL tasks (SPEC §1–4)."""

from __future__ import annotations

import pytest

from apps.accounts.models import MembershipTier
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.core.errors import ConcurrencyLimitReached
from apps.engines.models import SandboxJob, UpstreamAccount
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Protocol, Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME, dispatch_pending
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.inputs import Caller, ClientEcho
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit

from .helpers import (
    button_id,
    instant_sandbox_pool,
    png_data_url,
    run_to_completion,
    sandbox_account,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_caller(organization, test_mode_key):
    return Caller(organization=organization, api_key=test_mode_key.api_key)


def entries(task: Task) -> list[str]:
    return list(LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True))


# --- outcomes --------------------------------------------------------------------------------


def test_submit_with_a_free_slot_starts_at_once(caller, fund, organization):
    fund(organization, 100_000)
    account = sandbox_account()
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox")
    assert outcome.result == SubmitOutcome.STARTED
    assert outcome.queue_position == 0
    # The request only queued it: the dispatch message starts it on a worker.
    assert Task.objects.get(pk=outcome.task.pk).status == Status.NOT_START
    dispatch_pending()
    task = Task.objects.get(pk=outcome.task.pk)
    assert task.status == Status.SUBMITTED
    assert task.upstream_account == account
    assert task.engine == "sandbox"
    assert task.price == 14000
    assert entries(task) == [EntryKind.HOLD]
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (86_000, 14_000)


def test_submit_without_a_free_slot_is_queued_with_its_position(caller, fund, organization):
    organization.tier = MembershipTier.objects.get(code="VIP")
    organization.save(update_fields=["tier"])
    fund(organization, 100_000)
    sandbox_account(concurrency=1)
    first = task_submit(caller=caller, action=Action.IMAGINE, prompt="one")
    dispatch_pending()  # a worker takes the dispatch message and starts it
    second = task_submit(caller=caller, action=Action.IMAGINE, prompt="two")
    third = task_submit(caller=caller, action=Action.IMAGINE, prompt="three")
    relax = task_submit(caller=caller, action=Action.IMAGINE, prompt="four", mode="relax")
    assert first.result == SubmitOutcome.STARTED
    assert (second.result, second.queue_position) == (SubmitOutcome.QUEUED, 1)
    assert (third.result, third.queue_position) == (SubmitOutcome.QUEUED, 2)
    # Positions count per mode: the RELAX task is first in its own queue.
    assert (relax.result, relax.queue_position) == (SubmitOutcome.QUEUED, 1)
    assert relax.task.mode == Mode.RELAX
    # Queued tasks hold their price too.
    assert balance_get(organization=organization).held == 3 * 14000 + 7000


def test_submit_stores_the_request_as_sent(caller, fund, organization):
    fund(organization, 100_000)
    outcome = task_submit(
        caller=Caller(organization=organization, api_key=caller.api_key, protocol=Protocol.MJPROXY),
        action=Action.IMAGINE,
        prompt="  a red fox --ar 16:9 --seed 42 --relax  ",
        echo=ClientEcho(
            notify_hook="https://example.com/hook", state='{"a": 1}', metadata={"k": "v"}
        ),
    )
    task = Task.objects.get(pk=outcome.task.pk)
    assert task.prompt == "a red fox --ar 16:9 --seed 42 --relax"
    assert task.prompt_en == "a red fox --ar 16:9 --seed 42"  # the mode flag is stripped
    assert task.mode == Mode.RELAX
    assert task.seed == 42
    assert task.state == '{"a": 1}'
    assert task.metadata == {"k": "v"}
    assert task.notify_hook == "https://example.com/hook"
    assert task.protocol == Protocol.MJPROXY
    assert task.properties == {"finalPrompt": "a red fox --ar 16:9 --seed 42"}
    assert task.is_test is False
    assert task.api_key == caller.api_key


@pytest.mark.parametrize(
    ("mode", "path_mode", "prompt", "expected"),
    [
        ("turbo", "RELAX", "a fox --fast", Mode.TURBO),  # the request field wins
        (None, "relax", "a fox --turbo", Mode.RELAX),  # then the path prefix
        (None, None, "a fox --turbo", Mode.TURBO),  # then the prompt flag
        (None, None, "a fox", Mode.FAST),  # then FAST
        ("NORMAL", None, "a fox", Mode.RELAX),  # OhMyGPT's name for RELAX
        ("", None, "a fox --relax", Mode.RELAX),  # an empty field is no choice
    ],
)
def test_mode_precedence(caller, fund, organization, mode, path_mode, prompt, expected):
    fund(organization, 100_000)
    outcome = task_submit(
        caller=caller, action=Action.IMAGINE, prompt=prompt, mode=mode, path_mode=path_mode
    )
    assert outcome.task.mode == expected
    assert "--" not in outcome.task.prompt_en


# --- test keys -------------------------------------------------------------------------------


def test_test_keys_run_on_the_built_in_sandbox_pool_and_are_never_charged(
    test_caller, organization
):
    # No funds, and only a live account: a test key still works out of the box.
    live_account = sandbox_account("live-sandbox")
    instant_sandbox_pool()
    outcome = task_submit(caller=test_caller, action=Action.IMAGINE, prompt="a test fox")
    assert outcome.result == SubmitOutcome.STARTED
    pool = UpstreamAccount.objects.get(name=SANDBOX_POOL_NAME)
    assert pool.is_sandbox_pool is True
    assert pool.engine == "sandbox"
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS
    assert task.is_test is True
    assert task.price == 0
    assert task.upstream_account == pool
    assert task.upstream_account != live_account
    assert entries(task) == []
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (0, 0)

    # Its follow-ups are test tasks too, on the pool, free.
    upscale = run_to_completion(
        task_press(
            caller=test_caller, parent_id=task.pk, custom_id=button_id(task, label="U2")
        ).task.pk
    )
    assert (upscale.status, upscale.is_test, upscale.price) == (Status.SUCCESS, True, 0)
    assert upscale.upstream_account == pool
    assert LedgerEntry.objects.filter(organization=organization).count() == 0


def test_live_tasks_never_run_on_the_sandbox_pool(caller, test_caller, fund, organization):
    fund(organization, 100_000)
    task_submit(caller=test_caller, action=Action.SHORTEN, prompt="make the pool exist")
    assert UpstreamAccount.objects.filter(name=SANDBOX_POOL_NAME).exists()
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt="a live fox")
    assert outcome.result == SubmitOutcome.QUEUED  # no live account yet
    account = sandbox_account()
    task = run_to_completion(outcome.task.pk)
    assert task.upstream_account == account


def test_test_and_live_tasks_cannot_be_mixed_in_follow_ups(caller, test_caller, fund, organization):
    fund(organization, 100_000)
    sandbox_account()
    instant_sandbox_pool()
    test_grid = run_to_completion(
        task_submit(caller=test_caller, action=Action.IMAGINE, prompt="a test fox").task.pk
    )
    with pytest.raises(Exception) as info:
        task_press(
            caller=caller, parent_id=test_grid.pk, custom_id=button_id(test_grid, label="U1")
        )
    assert info.value.message == (
        "Test-mode and live tasks cannot be mixed: use a key of the same kind as the parent."
    )
    assert Task.objects.count() == 1


def test_tier_limit_counts_test_key_tasks_too(caller, test_caller, fund, organization):
    fund(organization, 100_000)
    for n in range(2):
        task_submit(caller=test_caller, action=Action.SHORTEN, prompt=f"a test road {n}")
    task_submit(caller=caller, action=Action.SHORTEN, prompt="a live road")
    for who in (caller, test_caller):
        with pytest.raises(ConcurrencyLimitReached):
            task_submit(caller=who, action=Action.SHORTEN, prompt="one too many")
    assert Task.objects.count() == 3
    assert balance_get(organization=organization).held == 3500


def test_finished_tasks_free_their_place_under_the_limit(caller, fund, organization):
    fund(organization, 100_000)
    sandbox_account()
    ids = [
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a road {n}").task.pk
        for n in range(3)
    ]
    with pytest.raises(ConcurrencyLimitReached):
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a fourth road")
    run_to_completion(ids[0])
    assert task_submit(caller=caller, action=Action.SHORTEN, prompt="a fourth road").task


# --- MODAL tasks -----------------------------------------------------------------------------


def test_modal_tasks_do_not_count_against_the_limit_and_are_charged_only_once_queued(
    caller, fund, organization
):
    organization.tier = MembershipTier.objects.get(code="VIP")
    organization.save(update_fields=["tier"])
    fund(organization, 1_000_000)
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1")).task.pk
    )
    organization.tier = MembershipTier.objects.get(code="FREE")
    organization.save(update_fields=["tier"])
    spent = 1_000_000 - 14000 - 3500
    assert balance_get(organization=organization).available == spent

    # Three MODAL tasks while nothing runs, then three running tasks: the MODALs never count.
    modals = [
        task_press(caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label=label))
        for label in ("Vary (Region)", "Custom Zoom", "Vary (Region)")
    ]
    assert {m.result for m in modals} == {SubmitOutcome.MODAL}
    assert {Task.objects.get(pk=m.task.pk).status for m in modals} == {Status.MODAL}
    assert [m.task.price for m in modals] == [0, 0, 0]
    assert balance_get(organization=organization).held == 0
    assert LedgerEntry.objects.filter(task__in=[m.task.pk for m in modals]).count() == 0
    for n in range(2):
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a long road {n}")

    # Queuing the custom zoom takes the third place and holds the ZOOM price.
    zoom = task_submit_modal(caller=caller, task_id=modals[1].task.pk, prompt="a barn --zoom 1.5")
    assert zoom.task.status in (Status.NOT_START, Status.SUBMITTED)
    assert zoom.task.price == 14000
    assert entries(zoom.task) == [EntryKind.HOLD]
    assert balance_get(organization=organization).held == 2 * 3500 + 14000

    # Now at the limit: the vary region cannot be queued and stays MODAL, uncharged.
    with pytest.raises(ConcurrencyLimitReached):
        task_submit_modal(
            caller=caller, task_id=modals[0].task.pk, mask=png_data_url((255, 255, 255))
        )
    assert Task.objects.get(pk=modals[0].task.pk).status == Status.MODAL
    assert entries(modals[0].task) == []


def test_modal_step_two_sets_prompt_seed_and_zoom(caller, fund, organization):
    fund(organization, 1_000_000)
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn --ar 3:2").task.pk
    )
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U3")).task.pk
    )
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    # The default prompt is the parent's with --zoom 2, as Midjourney pre-fills it.
    assert modal.prompt_en == "a red barn --ar 3:2 --zoom 2"
    # Clients often send only the parameter: the description stays the parent's.
    queued = task_submit_modal(caller=caller, task_id=modal.pk, prompt="--zoom 1.25 --seed 7")
    task = Task.objects.get(pk=queued.task.pk)
    assert task.prompt_en == "a red barn --ar 3:2 --zoom 1.25 --seed 7"
    assert task.params["zoom_factor"] == 1.25
    assert task.seed == 7
    assert task.action == Action.ZOOM
    assert run_to_completion(task.pk).status == Status.SUCCESS


def test_sandbox_job_is_created_once_per_task(caller, fund, organization):
    fund(organization, 100_000)
    sandbox_account()
    outcome = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road")
    run_to_completion(outcome.task.pk)
    job = SandboxJob.objects.get(task_id=outcome.task.pk)
    assert job.submit_calls == 1
    assert Task.objects.get(pk=outcome.task.pk).upstream_job_id == job.job_id


# --- images given as URLs --------------------------------------------------------------------


@pytest.fixture
def image_server():
    """A local HTTP server with one PNG at /cat.png (and nothing else)."""
    import http.server
    import threading

    from .helpers import png_bytes

    body = png_bytes((30, 160, 90), (48, 32))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/cat.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", body
    server.shutdown()
    server.server_close()


def test_an_image_url_is_fetched_and_stored(caller, fund, organization, settings, image_server):
    from apps.tasks.storage import read_file

    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the test server is on loopback
    base, body = image_server
    fund(organization, 100_000)
    outcome = task_submit(caller=caller, action=Action.DESCRIBE, images=[f"{base}/cat.png"])
    (name,) = outcome.task.inputs
    assert read_file(name) == body


@pytest.mark.parametrize(
    ("path", "allow_private", "message"),
    [
        (
            "/cat.png",
            False,
            "images[0]: The URL resolves to a private, loopback, link-local or otherwise "
            "non-public address, which is not allowed.",
        ),
        (
            "/missing.png",
            True,
            "images[0]: the image could not be downloaded (The URL answered with HTTP 404.).",
        ),
    ],
)
def test_an_image_url_that_cannot_be_used_is_rejected(
    caller, fund, organization, settings, image_server, path, allow_private, message
):
    from apps.core.errors import ValidationFailed

    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = allow_private
    base, _ = image_server
    fund(organization, 100_000)
    with pytest.raises(ValidationFailed) as info:
        task_submit(caller=caller, action=Action.DESCRIBE, images=[f"{base}{path}"])
    assert info.value.message == message
    assert Task.objects.count() == 0
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == 0


@pytest.mark.postgres
def test_the_fast_insert_writes_what_the_orm_would(organization, fund):
    """acceptance._insert passes plain values as they are: each column as task.save() sets it."""
    from django.db import connection
    from django.utils import timezone

    from apps.tasks.services.acceptance import _insert

    now = timezone.now()

    def make(task_id: str) -> Task:
        return Task(
            id=task_id,
            organization=organization,
            action=Action.IMAGINE,
            status=Status.NOT_START,
            mode=Mode.FAST,
            protocol=Protocol.MJPROXY,
            prompt="a cat --ar 3:2",
            params={"ar": "3:2", "nested": [1, "x"]},
            metadata={"k": "v"},
            progress=0,
            seed=4_000_000_000,
            price=14_000,
            is_test=False,
            submitted_at=now,
            tenant_seq=7,
        )

    _insert(make("9000000000000000001"))
    make("9000000000000000002").save(force_insert=True)
    columns = [
        f.column
        for f in Task._meta.concrete_fields
        if f.name not in ("id", "created_at", "updated_at")
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(columns)} FROM tasks_task WHERE id = ANY(%s) ORDER BY id",  # noqa: S608
            [["9000000000000000001", "9000000000000000002"]],
        )
        fast, orm = cursor.fetchall()
    assert fast == orm
    assert Task.objects.get(pk="9000000000000000001").created_at is not None
