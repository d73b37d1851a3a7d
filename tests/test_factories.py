"""The shared factories build what their names promise (tests elsewhere rely on it)."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from apps.engines.models import Health
from apps.tasks.enums import Action, ErrorCode, Mode, Status
from apps.tasks.scheduling import SANDBOX_POOL_NAME, dispatch_pending
from apps.tasks.storage import read_file
from apps.webhooks.models import DeliveryState

from .factories import (
    TaskFactory,
    UpstreamAccountFactory,
    WebhookDeliveryFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db


def test_task_traits_set_the_status_and_what_the_lifecycle_would_have_set(organization):
    queued = TaskFactory(organization=organization, queued=True)
    assert (queued.status, queued.upstream_account) == (Status.NOT_START, None)
    assert queued.submitted_at is not None and queued.start_deadline is not None

    running = TaskFactory(organization=organization, running=True)
    assert running.status == Status.IN_PROGRESS
    assert running.upstream_account is not None and running.upstream_job_id
    assert 0 < running.progress < 100

    modal = TaskFactory(organization=organization, modal=True)
    assert (modal.status, modal.action, modal.params) == (
        Status.MODAL,
        Action.VARIATION,
        {"variant": "inpaint"},
    )

    failed = TaskFactory(organization=organization, failed=True)
    assert (failed.status, failed.error_code) == (Status.FAILURE, ErrorCode.UPSTREAM_REJECTED)
    assert failed.finished_at is not None

    cancelled = TaskFactory(organization=organization, cancelled=True)
    assert (cancelled.status, cancelled.error_code) == (Status.CANCEL, ErrorCode.CANCELLED)

    ids = {t.pk for t in (queued, running, modal, failed, cancelled)}
    assert len(ids) == 5 and all(i.startswith("88") for i in ids)


def test_a_succeeded_grid_has_its_files_stored_and_its_buttons(organization):
    task = TaskFactory(organization=organization, succeeded=True)
    task.refresh_from_db()
    assert (task.status, task.progress) == (Status.SUCCESS, 100)
    assert task.result["is_grid"] is True
    names = [task.result["image"], task.result["thumb"], *task.result["splits"]]
    assert len(task.result["splits"]) == 4
    assert all(default_storage.exists(name) for name in names)
    assert read_file(task.result["image"]).startswith(b"\x89PNG")
    labels = [button["label"] for button in task.buttons]
    assert {"U1", "U4", "V1", "V4"} <= set(labels)
    assert task.properties["jobHash"] in task.buttons[0]["custom_id"]


def test_a_succeeded_task_may_skip_its_files(organization):
    task = TaskFactory(organization=organization, succeeded=True, stored_result=False)
    task.refresh_from_db()
    assert (task.status, task.result, task.buttons) == (Status.SUCCESS, {}, [])


def test_accounts_are_made_through_the_service_and_unhealthy_ones_get_no_work(organization):
    sick = UpstreamAccountFactory(unhealthy=True, modes=[Mode.FAST])
    assert (sick.engine, sick.health, sick.options) == (
        "sandbox",
        Health.COOLING_DOWN,
        {"duration": 0},
    )
    # Options are coerced like the operator's form input is.
    slow = UpstreamAccountFactory(options={"duration": "2.5"}, modes=[Mode.RELAX])
    assert slow.options == {"duration": 2.5}

    task = TaskFactory(organization=organization, queued=True, mode=Mode.FAST)
    dispatch_pending()
    task.refresh_from_db()
    assert (task.status, task.upstream_account) == (Status.NOT_START, None)

    healthy = UpstreamAccountFactory(modes=[Mode.FAST])
    dispatch_pending()
    task.refresh_from_db()
    assert (task.status, task.upstream_account) == (Status.SUBMITTED, healthy)


def test_mjproxy_credentials_are_encrypted_out_of_the_options():
    account = UpstreamAccountFactory(
        mjproxy=True, options={"base_url": "http://127.0.0.1:9", "secret": "s3cret"}
    )
    assert account.engine == "mjproxy"
    assert account.options == {"base_url": "http://127.0.0.1:9"}
    assert account.secrets == {"secret": "s3cret"}


def test_the_sandbox_pool_trait_is_the_pool():
    pool = UpstreamAccountFactory(sandbox_pool=True)
    assert (pool.name, pool.is_sandbox_pool) == (SANDBOX_POOL_NAME, True)


def test_deliveries_belong_to_their_events_endpoint_and_organization(organization):
    endpoint = WebhookEndpointFactory(organization=organization)
    failed = WebhookDeliveryFactory(event__endpoint=endpoint, failed=True)
    assert failed.organization == failed.event.organization == organization
    assert failed.endpoint == endpoint
    assert (failed.state, failed.status_code) == (DeliveryState.FAILED, 500)
    assert failed.event.target_key == f"endpoint:{endpoint.pk}"
    off = WebhookEndpointFactory(disabled=True)
    assert off.is_enabled is False and off.disabled_reason
