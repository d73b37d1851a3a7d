"""The stats page of the operator admin. Thin: the selectors compute, the charts draw."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from . import charts
from .selectors import StatsOverview, stats_overview


def _as_json(stats: StatsOverview) -> dict[str, Any]:
    data = asdict(stats)
    data["success_hour"]["percent"] = stats.success_hour.percent
    data["success_day"]["percent"] = stats.success_day.percent
    for row, mode in zip(data["modes"], stats.modes, strict=True):
        row["success"]["percent"] = mode.success.percent
    for row, account in zip(data["accounts"], stats.accounts, strict=True):
        row["utilisation"] = account.utilisation
    data["tokens_30_days"] = stats.tokens_30_days
    data["tasks_last_hour"] = stats.tasks_last_hour
    return data


def _charts(stats: StatsOverview) -> dict[str, Any]:
    minutes = [bucket.minute.strftime("%H:%M") for bucket in stats.per_minute]
    days = [day.day.strftime("%m-%d") for day in stats.tokens_per_day]
    return {
        "tasks_chart": charts.stacked_bars(
            title="Tasks per minute, last hour",
            labels=minutes,
            series=[charts.Series("created", "s-created", [b.created for b in stats.per_minute])],
        ),
        "outcomes_chart": charts.stacked_bars(
            title="Tasks finished per minute, last hour",
            labels=minutes,
            series=[
                charts.Series("succeeded", "s-ok", [b.succeeded for b in stats.per_minute]),
                charts.Series("failed", "s-fail", [b.failed for b in stats.per_minute]),
            ],
        ),
        "tokens_chart": charts.stacked_bars(
            title="Tokens captured per day, last 30 days",
            labels=days,
            series=[charts.Series("tokens", "s-tokens", [d.tokens for d in stats.tokens_per_day])],
            label_every=5,
        ),
        "account_meters": [
            (account, charts.meter(value=account.running, maximum=account.concurrency))
            for account in stats.accounts
        ],
        "mode_meters": [
            (mode, charts.meter(value=mode.running, maximum=mode.capacity)) for mode in stats.modes
        ],
    }


def stats_view(site: admin.AdminSite) -> Callable[[HttpRequest], HttpResponse]:
    def view(request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("operator.view_stats"):
            raise PermissionDenied("You may not view the operator stats.")
        stats = stats_overview()
        if request.GET.get("format") == "json":
            return JsonResponse(_as_json(stats))
        context = {
            **site.each_context(request),
            "title": "Live stats",
            "stats": stats,
            **_charts(stats),
        }
        return TemplateResponse(request, "admin/operator/stats.html", context)

    return view
