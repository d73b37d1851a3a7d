"""A task list page is one hand-built statement (issue 15 P3) that lists exactly what
``task_list`` lists, in the same order, through every filter and cursor."""

from __future__ import annotations

from datetime import timedelta
from itertools import product
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.selectors import PageBound, TaskFilters, task_list, task_page, task_page_exists
from tests.factories import OrganizationFactory, TaskFactory

PROMPTS = ["A red fox", "100% fox", "fox_tail", "back\\slash fox", "plain owl", "RED OWL"]


@pytest.fixture
def tasks(organization: Any) -> list[Task]:
    """Tasks of every filterable kind, several created in the same microsecond."""
    moment = timezone.now().replace(microsecond=0)
    made = []
    for n, (status, action, mode, is_test) in enumerate(
        product(
            [Status.SUCCESS, Status.FAILURE, Status.NOT_START],
            [Action.IMAGINE, Action.DESCRIBE],
            [Mode.FAST, Mode.RELAX],
            [False, True],
        )
    ):
        task = TaskFactory(
            organization=organization,
            status=status,
            action=action,
            mode=mode,
            is_test=is_test,
            prompt=PROMPTS[n % len(PROMPTS)],
        )
        # Ties in created_at: three tasks a moment, so the id decides the order within one.
        Task.objects.filter(pk=task.pk).update(created_at=moment - timedelta(seconds=n // 3))
        made.append(task)
    other = OrganizationFactory()
    for prompt in PROMPTS:
        TaskFactory(organization=other, prompt=prompt, created_at=moment)
    return made


FILTERS = [
    TaskFilters(),
    TaskFilters(statuses=(Status.SUCCESS,)),
    TaskFilters(statuses=(Status.FAILURE, Status.NOT_START), actions=(Action.DESCRIBE,)),
    TaskFilters(modes=(Mode.RELAX,), is_test=False),
    TaskFilters(is_test=True),
    TaskFilters(search="fox"),
    TaskFilters(search="RED"),  # case-insensitive, as icontains
    TaskFilters(search="100%"),  # % and _ are literal, as icontains escapes them
    TaskFilters(search="x_t"),
    TaskFilters(search="_"),
    TaskFilters(search="k\\s"),
    TaskFilters(statuses=(Status.SUCCESS,), modes=(Mode.FAST,), search="owl", is_test=False),
]


def _orm_ids(organization: Any, filters: TaskFilters) -> list[str]:
    return list(
        task_list(
            organization=organization,
            statuses=list(filters.statuses),
            actions=list(filters.actions),
            modes=list(filters.modes),
            is_test=filters.is_test,
            search=filters.search,
        ).values_list("pk", flat=True)
    )


@pytest.mark.django_db
@pytest.mark.parametrize("filters", FILTERS, ids=repr)
def test_a_page_lists_what_task_list_lists(
    organization: Any, tasks: list[Task], filters: TaskFilters
) -> None:
    expected = _orm_ids(organization, filters)
    page = task_page(organization=organization, filters=filters, limit=100)
    assert [t.pk for t in page] == expected
    if filters.search in ("_", "100%"):
        assert len(expected) < len(tasks)  # the wildcard characters did not match everything


@pytest.mark.django_db
@pytest.mark.parametrize("filters", FILTERS[:6], ids=repr)
def test_cursors_walk_every_task_once_in_both_directions(
    organization: Any, tasks: list[Task], filters: TaskFilters
) -> None:
    expected = _orm_ids(organization, filters)
    walked: list[Task] = []
    after = None
    while True:
        page = task_page(organization=organization, filters=filters, after=after, limit=4)
        walked += page
        if len(page) < 4:
            break
        after = PageBound(created_at=page[-1].created_at, id=page[-1].pk)
    assert [t.pk for t in walked] == expected
    # Backwards from the last one: the pages before it, each oldest first.
    back: list[str] = []
    before = PageBound(created_at=walked[-1].created_at, id=walked[-1].pk)
    while True:
        page = task_page(organization=organization, filters=filters, before=before, limit=3)
        back = [t.pk for t in reversed(page)] + back
        if not page:
            break
        before = PageBound(created_at=page[-1].created_at, id=page[-1].pk)
    assert [*back, walked[-1].pk] == expected
    first = walked[0]
    newest = PageBound(created_at=first.created_at, id=first.pk)
    assert not task_page_exists(organization=organization, filters=filters, before=newest)
    if len(walked) > 1:
        second = PageBound(created_at=walked[1].created_at, id=walked[1].pk)
        assert task_page_exists(organization=organization, filters=filters, before=second)


@pytest.mark.django_db
def test_a_paged_task_is_the_task_the_orm_reads(organization: Any, tasks: list[Task]) -> None:
    (read,) = task_page(organization=organization, filters=TaskFilters(search="owl"), limit=1)
    expected = Task.objects.get(pk=read.pk)
    for field in Task._meta.concrete_fields:
        assert getattr(read, field.attname) == getattr(expected, field.attname), field.name


@pytest.mark.django_db
def test_the_native_list_reads_one_page_in_one_statement(
    organization: Any, tasks: list[Task], key_client: APIClient
) -> None:
    cache.clear()
    key_client.get("/api/v1/tasks", {"limit": 5})
    with CaptureQueriesContext(connection) as ctx:
        answer = key_client.get("/api/v1/tasks", {"limit": 5, "status": "SUCCESS"})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert [t["id"] for t in body["results"]] == _orm_ids(
        organization, TaskFilters(statuses=(Status.SUCCESS,))
    )[:5]
    statements = [q["sql"] for q in ctx.captured_queries]
    assert len(statements) == 1, statements
    assert '"tasks_task"' in statements[0] and "JOIN" not in statements[0]
    # The next page, and back: the cursors still work through the view.
    second = key_client.get(body["next"]).json()
    assert second["previous"] is not None
    assert key_client.get(second["previous"]).json()["results"] == body["results"]


@pytest.mark.django_db
def test_the_mjproxy_list_is_the_newest_tasks_of_the_organization(
    organization: Any, tasks: list[Task], key_client: APIClient
) -> None:
    answer = key_client.get("/mj/task/list")
    assert answer.status_code == 200
    assert [t["id"] for t in answer.json()] == _orm_ids(organization, TaskFilters())[:100]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "limit=20",
        "limit=1",
        "limit=100",
        "limit=0",
        "limit=101",
        "limit=2.0",
        "limit=%D9%A3",
        "limit=1&limit=2",
        "limit=5&status=SUCCESS",
        "cursor=abc",
        "limit=+5",
        "limit=",
    ],
)
def test_the_plain_list_query_reads_as_the_serializer_does(query: str) -> None:
    """The list's shortcut for no query or a bare ``limit`` answers exactly what
    TaskListQuerySerializer validates; anything else goes to the serializer."""
    from django.http import QueryDict
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from apps.protocols.v1.serializers import TaskListQuerySerializer
    from apps.protocols.v1.views import _plain_list_query

    request = Request(APIRequestFactory().get(f"/api/v1/tasks?{query}"))
    plain = _plain_list_query(request)
    serializer = TaskListQuerySerializer(data=QueryDict(query))
    if plain is not None:
        assert serializer.is_valid(), serializer.errors
        assert plain == dict(serializer.validated_data)
    else:
        assert query and not (
            query.startswith("limit=") and query[6:].isdigit() and 1 <= int(query[6:]) <= 100
        )
