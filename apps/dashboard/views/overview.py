from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.billing.selectors import balance_get, plan_get
from apps.tasks.selectors import task_list

from .. import presenters
from ..selectors import spend_by_day
from ..tenancy import dashboard_view, organization_of

RECENT_TASKS = 8


@dashboard_view()
def overview(request: HttpRequest) -> HttpResponse:
    organization = organization_of(request)
    days = spend_by_day(organization=organization, days=30)
    recent = list(task_list(organization=organization)[:RECENT_TASKS])
    return render(
        request,
        "dashboard/overview.html",
        {
            "balance": balance_get(organization=organization),
            "plan": plan_get(organization=organization),
            "chart": presenters.spend_chart(days),
            "recent": [(task, presenters.task_images(task)) for task in recent],
            "nav": "overview",
        },
    )
