"""The task list: search and filters, constant query count, and no unbounded count."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.operator.admin_tools import CappedCountPaginator
from apps.tasks.enums import Status
from apps.tasks.models import Task
from tests.factories import OrganizationFactory, TaskFactory, UpstreamAccountFactory
from tests.tasks.helpers import sandbox_account

from .conftest import admin_url

pytestmark = pytest.mark.django_db

LIST = "tasks_task_changelist"


def make(org, **fields) -> Task:
    return TaskFactory(organization=org, **fields)


@pytest.fixture
def rows(organization):
    other = OrganizationFactory(name="Globex Studio")
    account = sandbox_account("acct-x")
    return {
        "plain": make(organization, prompt="a violet tram at dusk"),
        "upstream": make(
            organization,
            status=Status.IN_PROGRESS,
            upstream_account=account,
            engine="sandbox",
            upstream_job_id="1712345678901234",
            prompt="glass orchard",
        ),
        "test": make(organization, is_test=True, mode="RELAX", prompt="test harbour"),
        "globex": make(other, status=Status.FAILURE, mode="TURBO", prompt="copper moon"),
        "account": account,
    }


def shown(client, **params) -> set[str]:
    response = client.get(admin_url(LIST), params)
    assert response.status_code == 200
    return {str(t.pk) for t in response.context["cl"].result_list}


def test_search_by_id_upstream_id_prompt_and_organization(operator_client, rows):
    assert shown(operator_client, q=rows["plain"].pk) == {rows["plain"].pk}
    assert shown(operator_client, q="1712345678901234") == {rows["upstream"].pk}
    assert shown(operator_client, q="violet tram") == {rows["plain"].pk}
    assert shown(operator_client, q="globex") == {rows["globex"].pk}
    assert shown(operator_client, q="0000") == set()


def test_an_id_search_also_finds_the_follow_ups(operator_client, rows, organization):
    child = make(organization, parent=rows["plain"], action="UPSCALE")
    assert shown(operator_client, q=rows["plain"].pk) == {rows["plain"].pk, child.pk}


def test_filters_by_status_mode_engine_account_and_test_flag(operator_client, rows):
    assert shown(operator_client, status__exact=Status.FAILURE) == {rows["globex"].pk}
    assert shown(operator_client, mode__exact="RELAX") == {rows["test"].pk}
    assert shown(operator_client, engine="sandbox") == {rows["upstream"].pk}
    assert shown(operator_client, upstream_account__id__exact=rows["account"].pk) == {
        rows["upstream"].pk
    }
    assert shown(operator_client, is_test__exact="1") == {rows["test"].pk}
    assert shown(operator_client, is_test__exact="0") == {
        rows["plain"].pk,
        rows["upstream"].pk,
        rows["globex"].pk,
    }


def test_the_list_costs_the_same_queries_for_few_or_many_tasks(operator_client, organization):
    account = sandbox_account("acct-q")
    make(organization, upstream_account=account)
    operator_client.get(admin_url(LIST))
    with CaptureQueriesContext(connection) as few:
        operator_client.get(admin_url(LIST))
    for i in range(30):
        org = OrganizationFactory()
        make(org, upstream_account=UpstreamAccountFactory(name=f"a{i}"))
    with CaptureQueriesContext(connection) as many:
        operator_client.get(admin_url(LIST))
    # One more account in the filter sidebar is not a query per row: the lists are equal.
    assert len(many) == len(few)
    assert not any("COUNT(*)" in q["sql"] and "LIMIT" not in q["sql"] for q in many)


def test_past_the_cap_the_list_says_more_than(monkeypatch, operator_client, organization):
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    for _ in range(5):
        make(organization)
    html = operator_client.get(admin_url(LIST)).content.decode()
    assert "more than 3 tasks" in html
    monkeypatch.setattr(CappedCountPaginator, "cap", 10)
    assert "5 tasks" in operator_client.get(admin_url(LIST)).content.decode()


def test_the_big_lists_never_offer_per_filter_counts(operator_client, rows):
    html = operator_client.get(admin_url(LIST), {"_facets": "1"}).content.decode()
    assert "Show counts" not in html
    assert "(1)" not in html  # no facet counts even when asked for in the URL
