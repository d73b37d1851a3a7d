"""The organization's unfinished-task counter (issue 15): kept by the task table's trigger in
every transaction that creates or finishes a task, checked by ``ledger_check``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.accounts.models import Organization
from apps.billing.audit import ledger_audit
from apps.tasks.enums import ErrorCode, Status
from apps.tasks.lifecycle import task_fail
from apps.tasks.models import Task
from tests.factories import OrganizationFactory, TaskFactory


def counter(organization: Organization) -> int:
    return Organization.objects.values_list("unfinished_tasks", flat=True).get(pk=organization.pk)


@pytest.mark.django_db
def test_counter_follows_inserts_transitions_and_deletes() -> None:
    org, other = OrganizationFactory(), OrganizationFactory()
    queued = TaskFactory(organization=org, status=Status.NOT_START)
    running = TaskFactory(organization=org, status=Status.IN_PROGRESS)
    TaskFactory(organization=org, status=Status.MODAL)
    TaskFactory(organization=org, status=Status.SUCCESS)
    TaskFactory(organization=other, status=Status.SUBMITTED)
    assert (counter(org), counter(other)) == (2, 1)

    Task.objects.filter(pk=queued.pk).update(status=Status.SUBMITTED)  # unfinished -> unfinished
    assert counter(org) == 2
    assert task_fail(task_id=running.pk, reason="x", error_code=ErrorCode.INTERNAL_ERROR)
    assert counter(org) == 1
    Task.objects.filter(organization=org, status=Status.MODAL).update(status=Status.NOT_START)
    assert counter(org) == 2
    Task.objects.filter(pk=queued.pk).update(organization=other)
    assert (counter(org), counter(other)) == (1, 2)
    Task.objects.filter(pk=queued.pk).delete()
    assert (counter(org), counter(other)) == (1, 1)
    assert ledger_audit().ok


@pytest.mark.django_db
def test_saving_an_organization_never_writes_a_stale_counter() -> None:
    org = OrganizationFactory()
    stale = Organization.objects.get(pk=org.pk)
    TaskFactory(organization=org, status=Status.NOT_START)
    stale.name = "Renamed"
    stale.save()
    assert counter(org) == 1


@pytest.mark.django_db
def test_ledger_check_reports_a_counter_that_drifted() -> None:
    org = OrganizationFactory()
    TaskFactory(organization=org, status=Status.NOT_START)
    Organization.objects.filter(pk=org.pk).update(unfinished_tasks=5)
    report = ledger_audit()
    assert [(d.check, d.organization_id, d.expected, d.actual) for d in report.drifts] == [
        ("unfinished", org.pk, 1, 5)
    ]
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("ledger_check", stdout=out)
    assert "unfinished-task counter" in out.getvalue()
