from __future__ import annotations

import io
import itertools
import secrets
from datetime import timedelta
from typing import Any

import factory
from allauth.account.models import EmailAddress
from django.utils import timezone
from PIL import Image

from apps.accounts.models import Membership, MembershipTier, Organization, Role, User
from apps.billing.ledger import balance_initialize
from apps.engines.models import Health, UpstreamAccount
from apps.engines.services import upstream_account_create
from apps.tasks.buttons import buttons_for
from apps.tasks.enums import Action, ErrorCode, Mode, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME
from apps.tasks.storage import store_result
from apps.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEvent


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", "pass-1234-word")

    @factory.post_generation
    def verified(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted is not False:
            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Org {n}")
    tier = factory.LazyFunction(lambda: MembershipTier.objects.get(code="FREE"))

    @factory.post_generation
    def balance(obj: Organization, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            balance_initialize(organization=obj)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.MEMBER


# --- upstream accounts ---------------------------------------------------------------------------


class UpstreamAccountFactory(factory.django.DjangoModelFactory):
    """An upstream account, made through ``upstream_account_create`` (options validated and
    coerced, credentials encrypted) like an operator would; health and switches are set after.

    Traits: ``mjproxy`` (needs ``options={"base_url": …}``, e.g. a fake's), ``sandbox_pool``
    (the built-in pool for test keys), ``unhealthy`` (cooling down, not usable until later),
    ``banned`` and ``disabled``.
    """

    class Meta:
        model = UpstreamAccount

    class Params:
        mjproxy = factory.Trait(engine="mjproxy", options=factory.LazyFunction(dict))
        sandbox_pool = factory.Trait(name=SANDBOX_POOL_NAME, is_sandbox_pool=True, concurrency=10)
        unhealthy = factory.Trait(
            health=Health.COOLING_DOWN,
            health_reason="The upstream answered 503 three times.",
            health_changed_at=factory.LazyFunction(timezone.now),
            cooldown_until=factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1)),
            consecutive_failures=3,
        )
        banned = factory.Trait(
            health=Health.BANNED,
            health_reason="Banned upstream.",
            health_changed_at=factory.LazyFunction(timezone.now),
        )
        disabled = factory.Trait(is_enabled=False)

    name = factory.Sequence(lambda n: f"upstream-{n}")
    engine = "sandbox"
    modes = factory.LazyFunction(lambda: [Mode.FAST, Mode.RELAX, Mode.TURBO])
    concurrency = 3
    # Sandbox jobs finish at once unless a test asks for a duration.
    options = factory.LazyFunction(lambda: {"duration": 0})

    @classmethod
    def _create(cls, model_class: type[UpstreamAccount], *args: Any, **kwargs: Any) -> Any:
        created = {
            key: kwargs.pop(key)
            for key in ("engine", "name", "modes", "concurrency", "queue_size", "options")
            if key in kwargs
        }
        if "run_timeout_seconds" in kwargs:
            created["run_timeout_seconds"] = kwargs.pop("run_timeout_seconds")
        account = upstream_account_create(**created)
        if kwargs:
            UpstreamAccount.objects.filter(pk=account.pk).update(**kwargs)
            account.refresh_from_db()
        return account


# --- tasks ---------------------------------------------------------------------------------------

_task_numbers = itertools.count(1)


def _task_id() -> str:
    """Explicit ids: thousands of factory tasks made in one millisecond never collide (the
    model's default mixes the clock with six random digits)."""
    return f"88{next(_task_numbers):012d}"


def _grid_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


_GRID_ACTIONS = (Action.IMAGINE, Action.VARIATION, Action.REROLL, Action.BLEND)


class TaskFactory(factory.django.DjangoModelFactory):
    """A bare ``Task`` row, written directly (no services, no ledger hold): for reads, lists,
    admin pages, webhooks and the ledger's own tests. Tasks that must be priced, held and
    dispatched are made through ``task_submit``.

    One trait per status, each with the fields the lifecycle would have set by then:
    ``queued`` (NOT_START), ``submitted``, ``running`` (IN_PROGRESS on an account), ``modal``
    (a VARIATION waiting for its inpaint mask), ``succeeded`` (result files really stored,
    buttons of its action), ``failed`` and ``cancelled``.
    """

    class Meta:
        model = Task

    class Params:
        queued = factory.Trait(
            status=Status.NOT_START,
            submitted_at=factory.LazyFunction(timezone.now),
            start_deadline=factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=2)),
        )
        submitted = factory.Trait(
            status=Status.SUBMITTED,
            submitted_at=factory.LazyFunction(timezone.now),
            engine="sandbox",
            upstream_account=factory.SubFactory(UpstreamAccountFactory),
        )
        running = factory.Trait(
            status=Status.IN_PROGRESS,
            progress=50,
            submitted_at=factory.LazyFunction(timezone.now),
            started_at=factory.LazyFunction(timezone.now),
            run_deadline=factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=10)),
            engine="sandbox",
            upstream_account=factory.SubFactory(UpstreamAccountFactory),
            upstream_job_id=factory.Sequence(lambda n: f"job-{n}"),
            submit_claimed_at=factory.LazyFunction(timezone.now),
        )
        modal = factory.Trait(
            status=Status.MODAL,
            action=Action.VARIATION,
            params=factory.LazyFunction(lambda: {"variant": "inpaint"}),
        )
        succeeded = factory.Trait(
            status=Status.SUCCESS,
            progress=100,
            submitted_at=factory.LazyFunction(timezone.now),
            started_at=factory.LazyFunction(timezone.now),
            finished_at=factory.LazyFunction(timezone.now),
            engine="sandbox",
            seed=42,
            stored_result=True,
        )
        failed = factory.Trait(
            status=Status.FAILURE,
            finished_at=factory.LazyFunction(timezone.now),
            fail_reason="The upstream rejected the job.",
            error_code=ErrorCode.UPSTREAM_REJECTED,
        )
        #: Write a result image (a grid for grid actions; its splits and thumbnails are made when
        #: first read) to storage and give the task the buttons Midjourney attaches to it.
        stored_result = False
        job_hash = factory.LazyFunction(lambda: secrets.token_hex(16))
        cancelled = factory.Trait(
            status=Status.CANCEL,
            finished_at=factory.LazyFunction(timezone.now),
            fail_reason="Cancelled.",
            error_code=ErrorCode.CANCELLED,
        )

    id = factory.LazyFunction(_task_id)
    organization = factory.SubFactory(OrganizationFactory)
    action = Action.IMAGINE
    mode = Mode.FAST
    prompt = "a red fox"
    prompt_en = factory.LazyAttribute(lambda task: task.prompt)

    result = factory.Maybe(
        "stored_result",
        yes_declaration=factory.LazyAttribute(
            lambda task: store_result(data=_grid_png(), is_grid=task.action in _GRID_ACTIONS)
        ),
        no_declaration=factory.LazyFunction(dict),
    )
    buttons = factory.Maybe(
        "stored_result",
        yes_declaration=factory.LazyAttribute(
            lambda task: [
                button.as_dict()
                for button in buttons_for(
                    task.action, job_hash=task.job_hash, is_grid=task.action in _GRID_ACTIONS
                )
            ]
        ),
        no_declaration=factory.LazyFunction(list),
    )
    properties = factory.Maybe(
        "stored_result",
        yes_declaration=factory.LazyAttribute(lambda task: {"jobHash": task.job_hash}),
        no_declaration=factory.LazyFunction(dict),
    )


# --- webhooks ------------------------------------------------------------------------------------


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    """An organization's webhook endpoint (all event types unless ``event_types`` is given).
    ``disabled`` is an endpoint switched off after it answered 410 Gone."""

    class Meta:
        model = WebhookEndpoint

    class Params:
        disabled = factory.Trait(
            is_enabled=False,
            disabled_reason="The endpoint answered 410 Gone.",
            disabled_at=factory.LazyFunction(timezone.now),
        )

    organization = factory.SubFactory(OrganizationFactory)
    url = factory.Sequence(lambda n: f"https://hooks{n}.example.com/mj")


class WebhookEventFactory(factory.django.DjangoModelFactory):
    """One outbox message to an endpoint (fixed body, as publishing would store it)."""

    class Meta:
        model = WebhookEvent

    msg_id = factory.Sequence(lambda n: f"msg_test_{n:08d}")
    endpoint = factory.SubFactory(WebhookEndpointFactory)
    organization = factory.SelfAttribute("endpoint.organization")
    event_type = "task.updated"
    body = "{}"
    target_key = factory.LazyAttribute(lambda event: f"endpoint:{event.endpoint.pk}")


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    """One delivery attempt of an event, due now. Traits: ``succeeded``, ``failed`` (a 500 with
    a retry to come) and ``dead`` (no retries left)."""

    class Meta:
        model = WebhookDelivery

    class Params:
        succeeded = factory.Trait(
            state=DeliveryState.SUCCEEDED,
            status_code=200,
            attempted_at=factory.LazyFunction(timezone.now),
        )
        failed = factory.Trait(
            state=DeliveryState.FAILED,
            status_code=500,
            error="HTTP 500",
            attempted_at=factory.LazyFunction(timezone.now),
        )
        dead = factory.Trait(
            state=DeliveryState.DEAD,
            status_code=500,
            error="HTTP 500",
            attempted_at=factory.LazyFunction(timezone.now),
        )

    event = factory.SubFactory(WebhookEventFactory)
    organization = factory.SelfAttribute("event.organization")
    endpoint = factory.SelfAttribute("event.endpoint")
    next_attempt_at = factory.LazyFunction(timezone.now)
