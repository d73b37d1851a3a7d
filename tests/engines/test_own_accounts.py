"""Bring-your-own upstream accounts: the native API, the refusals of the pool choice in every
dialect, the dispatcher's isolation and the platform fee (issue #18)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.ledger import task_rest_key
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.base import PermanentEngineError
from apps.engines.mjproxy.engine import client_for
from apps.engines.models import Health, UpstreamAccount
from apps.engines.notify import account_left_service
from apps.engines.own_services import own_account_create
from apps.tasks.enums import Action, Mode, Pool, Status
from apps.tasks.jobs import account_view
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.selectors import task_queue_estimate
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit
from tests.factories import UpstreamAccountFactory, UserFactory
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db

MJPROXY = {"base_url": "https://mj.example.com"}
LOOPBACK = "http://127.0.0.1:9"


def _tier(organization: Organization, code: str) -> None:
    organization.tier = MembershipTier.objects.get(code=code)
    organization.save(update_fields=["tier"])


def _auth(client: Any, key: Any) -> Any:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key.plaintext}")
    return client


@pytest.fixture
def premium(organization: Organization) -> Organization:
    _tier(organization, "PREMIUM")
    return organization


@pytest.fixture
def unchanged(organization, fund):
    """Every refused submit leaves tasks, ledger and accounts exactly as they were (the
    organization is funded first, so a refusal is never for want of tokens)."""
    fund(organization, 100_000)
    before = (Task.objects.count(), LedgerEntry.objects.count(), UpstreamAccount.objects.count())
    yield
    after = (Task.objects.count(), LedgerEntry.objects.count(), UpstreamAccount.objects.count())
    assert after == before


# --- the native API --------------------------------------------------------------------------


def test_an_account_is_added_with_write_only_credentials(api_client, premium, live_key):
    response = _auth(api_client, live_key).post(
        "/api/v1/upstream-accounts",
        {
            "name": "my proxy",
            "engine": "mjproxy",
            "modes": ["FAST", "relax"],
            "concurrency": 4,
            "options": MJPROXY,
            "secrets": {"secret": "hunter2-very-secret"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "my proxy"
    assert body["modes"] == ["FAST", "RELAX"]
    assert body["credentials_set"] is True
    assert body["options"] == MJPROXY
    assert body["running"] == 0 and body["serving"] == ["FAST", "RELAX"]
    assert "secrets" not in body
    assert b"hunter2" not in response.content
    account = UpstreamAccount.objects.get(pk=body["id"])
    assert account.owner_id == premium.pk
    assert dict(account.secrets) == {"secret": "hunter2-very-secret"}
    listed = api_client.get("/api/v1/upstream-accounts")
    assert [row["id"] for row in listed.json()] == [account.pk]
    assert b"hunter2" not in listed.content


def test_the_list_shows_neither_shared_nor_other_tenants_accounts(
    api_client, premium, live_key, other_organization
):
    UpstreamAccountFactory(name="shared-1")
    UpstreamAccountFactory(name="theirs", owner=other_organization)
    response = _auth(api_client, live_key).get("/api/v1/upstream-accounts")
    assert response.status_code == 200
    assert response.json() == []


def test_another_tenants_or_a_shared_account_answers_like_a_missing_one(
    api_client, premium, live_key, other_organization
):
    theirs = UpstreamAccountFactory(name="theirs", owner=other_organization)
    shared = UpstreamAccountFactory(name="shared-1")
    client = _auth(api_client, live_key)
    missing = client.get("/api/v1/upstream-accounts/999999")
    for account in (theirs, shared):
        for method in ("get", "patch", "delete"):
            # A GET carries no body (data would become a query string, refused as unknown).
            body = {} if method == "get" else {"data": {"is_enabled": False}, "format": "json"}
            response = getattr(client, method)(f"/api/v1/upstream-accounts/{account.pk}", **body)
            assert response.status_code == 404
            assert response.content == missing.content
    theirs.refresh_from_db()
    shared.refresh_from_db()
    assert theirs.is_enabled and shared.is_enabled


def test_a_free_plan_cannot_add_one(api_client, organization, live_key, unchanged):
    response = _auth(api_client, live_key).post(
        "/api/v1/upstream-accounts",
        {"name": "p", "engine": "mjproxy", "modes": ["FAST"], "options": MJPROXY},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "own_accounts_not_allowed"


def test_the_plans_count_is_enforced(api_client, organization, live_key):
    _tier(organization, "VIP")  # two accounts
    client = _auth(api_client, live_key)
    for n in range(2):
        body = {"name": f"p{n}", "engine": "mjproxy", "modes": ["FAST"], "options": MJPROXY}
        assert client.post("/api/v1/upstream-accounts", body, format="json").status_code == 201
    third = client.post(
        "/api/v1/upstream-accounts",
        {"name": "p3", "engine": "mjproxy", "modes": ["FAST"], "options": MJPROXY},
        format="json",
    )
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "own_account_limit"
    assert UpstreamAccount.objects.filter(owner=organization).count() == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ({"engine": "sandbox", "options": {}}, "Unknown engine 'sandbox'"),
        ({"options": {"base_url": "http://127.0.0.1:8080"}}, "base_url"),
        ({"options": {"base_url": "http://169.254.169.254"}}, "base_url"),
        ({"options": {"base_url": "http://10.0.0.5"}}, "base_url"),
        ({"options": {}}, "mjproxy needs base_url"),
        ({"modes": ["SLOW"]}, "Unknown mode"),
        ({"concurrency": 500}, "concurrency"),
    ],
)
def test_bad_accounts_are_refused_and_nothing_is_stored(
    api_client, premium, live_key, body, message
):
    payload = {"name": "p", "engine": "mjproxy", "modes": ["FAST"], "options": MJPROXY, **body}
    response = _auth(api_client, live_key).post("/api/v1/upstream-accounts", payload, format="json")
    assert response.status_code == 400, response.content
    assert message in response.content.decode()
    assert not UpstreamAccount.objects.filter(owner=premium).exists()


def test_a_read_only_key_cannot_change_accounts(api_client, premium, make_key):
    key = make_key(premium, read_only=True)
    account = own_account_create(
        organization=premium, engine="mjproxy", name="p", modes=["FAST"], options=MJPROXY
    )
    client = _auth(api_client, key)
    assert client.get("/api/v1/upstream-accounts").status_code == 200
    assert (
        client.patch(
            f"/api/v1/upstream-accounts/{account.pk}", {"is_enabled": False}, format="json"
        ).status_code
        == 403
    )
    assert client.delete(f"/api/v1/upstream-accounts/{account.pk}").status_code == 403
    account.refresh_from_db()
    assert account.is_enabled


def test_patch_changes_keep_credentials_and_delete_waits_for_running_jobs(
    api_client, premium, live_key
):
    account = own_account_create(
        organization=premium,
        engine="mjproxy",
        name="p",
        modes=["FAST"],
        options=MJPROXY,
        secrets={"secret": "kept-secret"},
    )
    client = _auth(api_client, live_key)
    response = client.patch(
        f"/api/v1/upstream-accounts/{account.pk}",
        {"concurrency": 5, "is_enabled": False},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["concurrency"], response.json()["is_enabled"]) == (5, False)
    account.refresh_from_db()
    assert dict(account.secrets) == {"secret": "kept-secret"}
    Task.objects.create(
        organization=premium,
        action=Action.IMAGINE,
        status=Status.IN_PROGRESS,
        upstream_account=account,
    )
    busy = client.delete(f"/api/v1/upstream-accounts/{account.pk}")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "account_busy"
    Task.objects.filter(upstream_account=account).update(status=Status.SUCCESS)
    assert client.delete(f"/api/v1/upstream-accounts/{account.pk}").status_code == 204
    assert not UpstreamAccount.objects.filter(pk=account.pk).exists()


def test_prices_show_the_platform_fee_table(api_client, premium, live_key):
    body = _auth(api_client, live_key).get("/api/v1/prices").json()
    assert body["own_accounts_allowed"] is True
    assert body["prices"]["IMAGINE"]["FAST"] == 14000
    assert body["own_account_fees"]["IMAGINE"]["FAST"] == 2800


# --- the pool choice: refusals in every dialect ----------------------------------------------


def _imagine(client: Any, dialect: str, pool: str | None, body_pool: str | None = None) -> Any:
    headers = {"HTTP_X_MJGATE_POOL": pool} if pool is not None else {}
    if dialect == "mjproxy":
        return client.post("/mj/submit/imagine", {"prompt": "a cat"}, format="json", **headers)
    if dialect == "ttapi":
        return client.post("/midjourney/v1/imagine", {"prompt": "a cat"}, format="json", **headers)
    body = {"action": "IMAGINE", "prompt": "a cat"}
    if body_pool is not None:
        body["pool"] = body_pool
    return client.post("/api/v1/tasks", body, format="json", **headers)


def _refusal(dialect: str, response: Any) -> str:
    body = response.json()
    if dialect == "mjproxy":
        assert body["code"] == 4
        return str(body["description"])
    if dialect == "ttapi":
        assert body["status"] == "FAILED"
        return str(body["message"])
    assert response.status_code == 400
    return str(body["error"]["message"])


DIALECTS = ["mjproxy", "ttapi", "v1"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_unknown_pool_is_refused(api_client, premium, live_key, fund, dialect, unchanged):
    response = _imagine(_auth(api_client, live_key), dialect, "somebody_elses")
    message = _refusal(dialect, response)
    assert "Unknown pool 'somebody_elses'" in message
    assert "X-Mjgate-Pool" in message if dialect != "v1" else "pool" in message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_own_is_refused_on_a_plan_without_own_accounts(
    api_client, organization, live_key, fund, dialect, unchanged
):
    response = _imagine(_auth(api_client, live_key), dialect, "own")
    assert "Free plan does not include your own upstream accounts" in _refusal(dialect, response)


@pytest.fixture
def unusable_own_accounts(premium):
    # Disabled, banned, or serving another mode: none of them can take FAST work.
    UpstreamAccountFactory(name="off", owner=premium, is_enabled=False)
    UpstreamAccountFactory(name="banned", owner=premium, banned=True)
    UpstreamAccountFactory(name="relax", owner=premium, modes=[Mode.RELAX])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_own_is_refused_without_a_usable_own_account(
    api_client, premium, live_key, unusable_own_accounts, dialect, unchanged
):
    response = _imagine(_auth(api_client, live_key), dialect, "own")
    message = _refusal(dialect, response)
    assert "none of your organization's own upstream accounts" in message
    assert "FAST" in message


def test_the_key_default_is_refused_like_a_header(api_client, premium, make_key, fund, unchanged):
    key = make_key(premium, pool=Pool.OWN)
    response = _imagine(_auth(api_client, key), "v1", None)
    assert response.json()["error"]["code"] == "no_own_account"


def test_a_key_cannot_default_to_own_on_a_free_plan(api_client, organization, live_key):
    response = _auth(api_client, live_key).post(
        "/api/v1/keys", {"name": "own key", "pool": "own"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "pool_not_allowed"
    assert not organization.api_keys.filter(name="own key").exists()


def test_the_body_pool_wins_over_the_header_and_the_key(api_client, premium, live_key, fund):
    fund(premium, 100_000)
    UpstreamAccountFactory(name="mine", owner=premium)
    response = _imagine(_auth(api_client, live_key), "v1", "shared", body_pool="own")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["pool"], body["price"], body["platform_fee"]) == ("own", 2800, 2800)


# --- isolation and money, end to end on the sandbox ------------------------------------------


def test_own_tasks_run_only_on_own_accounts_and_pay_the_fee(
    premium, make_key, fund, other_organization
):
    _tier(other_organization, "PREMIUM")
    fund(premium, 1_000_000)
    fund(other_organization, 1_000_000)
    mine = UpstreamAccountFactory(name="mine", owner=premium, concurrency=1)
    theirs = UpstreamAccountFactory(name="theirs", owner=other_organization, concurrency=5)
    shared = UpstreamAccountFactory(name="shared-1", concurrency=5)
    own = Caller(organization=premium, api_key=make_key(premium, pool=Pool.OWN).api_key)
    then = Caller(
        organization=premium, api_key=make_key(premium, pool=Pool.OWN_THEN_SHARED).api_key
    )
    outsider = Caller(organization=other_organization, api_key=make_key(other_organization).api_key)
    own_ids = [
        task_submit(caller=own, action=Action.IMAGINE, prompt=f"a fox {n}").task.pk
        for n in range(2)
    ]
    then_ids = [
        task_submit(caller=then, action=Action.IMAGINE, prompt=f"a owl {n}").task.pk
        for n in range(2)
    ]
    shared_ids = [
        task_submit(caller=outsider, action=Action.IMAGINE, prompt=f"a cow {n}").task.pk
        for n in range(3)
    ]
    dispatch_pending()
    placed = dict(Task.objects.values_list("pk", "upstream_account_id"))
    # One own slot: the older own-only task has it; the own-then-shared ones went shared.
    assert placed[own_ids[0]] == mine.pk and placed[own_ids[1]] is None
    assert {placed[i] for i in then_ids} == {shared.pk}
    assert {placed[i] for i in shared_ids} == {shared.pk}
    assert not Task.objects.filter(upstream_account=theirs).exists()
    for task_id in [*own_ids, *then_ids, *shared_ids]:
        run_to_completion(task_id)
    tasks = {t.pk: t for t in Task.objects.select_related("upstream_account")}
    assert {tasks[i].upstream_account_id for i in own_ids} == {mine.pk}
    assert all(t.status == Status.SUCCESS for t in tasks.values())
    assert [tasks[i].tokens_charged for i in own_ids] == [2800, 2800]
    assert [tasks[i].tokens_charged for i in then_ids] == [14000, 14000]
    assert balance_get(organization=premium).available == 1_000_000 - 2 * 2800 - 2 * 14000
    assert ledger_audit().ok


def test_own_then_shared_on_its_own_account_captures_the_fee_and_releases_the_rest(
    premium, make_key, fund
):
    fund(premium, 100_000)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccountFactory(name="shared-1")
    caller = Caller(
        organization=premium, api_key=make_key(premium, pool=Pool.OWN_THEN_SHARED).api_key
    )
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a heron").task
    assert (task.price, task.own_fee) == (14000, 2800)
    assert balance_get(organization=premium).held == 14000
    dispatch_pending()
    assert Task.objects.get(pk=task.pk).upstream_account_id == mine.pk  # own accounts first
    done = run_to_completion(task.pk)
    assert done.status == Status.SUCCESS
    entries = {
        e.kind + (":rest" if e.idempotency_key == task_rest_key(task.pk) else ""): (
            e.delta_available,
            e.delta_held,
        )
        for e in LedgerEntry.objects.filter(task=task)
    }
    assert entries == {
        EntryKind.HOLD: (-14000, 14000),
        EntryKind.CAPTURE: (0, -2800),
        EntryKind.RELEASE + ":rest": (11200, -11200),
    }
    balance = balance_get(organization=premium)
    assert (balance.available, balance.held) == (100_000 - 2800, 0)
    assert ledger_audit().ok


def test_a_follow_up_of_an_own_task_stays_on_the_own_account(premium, make_key, fund):
    fund(premium, 100_000)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    caller = Caller(organization=premium, api_key=make_key(premium, pool=Pool.OWN).api_key)
    parent = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a heron").task.pk
    )
    assert parent.upstream_account_id == mine.pk
    shared_caller = Caller(organization=premium, api_key=make_key(premium).api_key)
    child = task_press(
        caller=shared_caller, parent_id=parent.pk, custom_id=parent.buttons[0]["custom_id"]
    ).task
    assert child.pool == Pool.OWN and child.price == child.own_fee
    assert run_to_completion(child.pk).upstream_account_id == mine.pk


def test_an_unhealthy_own_account_shows_its_reason(api_client, premium, live_key):
    account = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccount.objects.filter(pk=account.pk).update(
        health=Health.NEEDS_VERIFICATION,
        health_reason="Discord asks for a captcha.",
        last_error="HTTP 403 from the upstream",
    )
    body = _auth(api_client, live_key).get(f"/api/v1/upstream-accounts/{account.pk}").json()
    assert body["health"] == "needs_verification"
    assert body["health_reason"] == "Discord asks for a captcha."
    assert body["last_error"] == "HTTP 403 from the upstream"
    assert body["serving"] == []


# --- an own account's address is customer input -----------------------------------------------


def test_calls_to_an_own_account_get_the_full_ssrf_guard(premium, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    own = UpstreamAccountFactory(
        name="mine", owner=premium, engine="mjproxy", options={"base_url": "https://mj.example"}
    )
    shared = UpstreamAccountFactory(
        name="ops", engine="mjproxy", options={"base_url": "https://mj.example"}
    )
    assert account_view(own).operator_managed is False
    assert account_view(shared).operator_managed is True
    # An address that later resolves (or was stored) private is refused before any connection.
    client = client_for(dataclasses.replace(account_view(own), options={"base_url": LOOPBACK}))
    with pytest.raises(PermanentEngineError, match="not usable"):
        client.request("GET", "/mj/task/list")


# --- queue position, operators' view ------------------------------------------------------------


def test_an_own_task_queues_in_its_organizations_own_line(premium, make_key, fund):
    fund(premium, 1_000_000)
    mine = UpstreamAccountFactory(name="mine", owner=premium, concurrency=1)
    UpstreamAccountFactory(name="shared-1", concurrency=1)
    own = Caller(organization=premium, api_key=make_key(premium, pool=Pool.OWN).api_key)
    shared = Caller(organization=premium, api_key=make_key(premium).api_key)
    for n in range(3):  # the shared line is longer than the own one
        task_submit(caller=shared, action=Action.SHORTEN, prompt=f"a road {n}")
    first = task_submit(caller=own, action=Action.SHORTEN, prompt="a fox")
    second = task_submit(caller=own, action=Action.SHORTEN, prompt="a fox again")
    assert first.result == "started"  # the own account's slot is free
    assert (second.result, second.queue_position) == ("queued", 1)
    dispatch_pending()
    assert Task.objects.get(pk=first.task.pk).upstream_account_id == mine.pk
    assert task_queue_estimate(task=Task.objects.get(pk=second.task.pk)).position == 1


def test_operators_are_not_mailed_about_a_tenants_own_account(premium):
    UserFactory(email="ops@example.com", is_staff=True)
    own = UpstreamAccountFactory(name="mine", owner=premium)
    shared = UpstreamAccountFactory(name="ops")
    assert not account_left_service(account=own, health=Health.BANNED, reason="banned")
    assert account_left_service(account=shared, health=Health.BANNED, reason="banned")
