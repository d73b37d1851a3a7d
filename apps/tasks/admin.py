"""Operator admin for tasks and banned words (SPEC §10): read-mostly, actions call services.

A task's fields are never edited here — every status change is a compare-and-set in the task
lifecycle, and money moves only with them — so the change page is a read-only inspection page
and the list's actions are the only writes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from apps.billing.models import LedgerEntry
from apps.core.errors import ServiceError
from apps.engines.base import engine_names
from apps.operator.admin_tools import AuditedAdminMixin, CappedCountPaginator, bounded, csv_export
from apps.operator.services import audit_record

from .enums import TERMINAL_STATUSES, Status
from .models import BannedWord, Task
from .services.cancel import task_cancel
from .services.operator import task_fail_by_operator, task_retry_on_another_account
from .storage import file_url

OPERATOR_CANCEL_REASON = "Cancelled by an operator."


class EngineFilter(admin.SimpleListFilter):
    """Engines from the registry: a DISTINCT over millions of tasks is not needed to list them."""

    title = "engine"
    parameter_name = "engine"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in engine_names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        value = self.value()
        return queryset.filter(engine=value) if value else queryset


def _task_state(task: Task) -> dict[str, Any]:
    return {
        "status": task.status,
        "upstream_account": task.upstream_account_id,
        "error_code": task.error_code,
    }


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "organization",
        "action",
        "status",
        "mode",
        "is_test",
        "upstream_account",
        "progress",
        "price",
        "error_code",
    )
    list_filter = ("status", "mode", "action", EngineFilter, "is_test", "upstream_account")
    search_fields = ("=id", "prompt", "organization__name", "=upstream_job_id")
    list_select_related = ("organization", "upstream_account")
    show_full_result_count = False
    # Counting every task for the page links is the slowest query of the list; stop at a cap.
    paginator = CappedCountPaginator
    # "Show counts" would COUNT every filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    ordering = ("-created_at",)
    actions = ("cancel_tasks", "retry_on_another_account", "fail_and_release", "export_csv")
    readonly_fields = ("images", "ledger", "audit_trail")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "organization",
                    "api_key",
                    "created_by",
                    "is_test",
                    "protocol",
                    "action",
                    "status",
                    "mode",
                    "parent",
                    "custom_id",
                )
            },
        ),
        ("Request", {"fields": ("prompt", "prompt_en", "params", "state", "notify_hook")}),
        (
            "Result",
            {
                "fields": (
                    "progress",
                    "images",
                    "buttons",
                    "properties",
                    "seed",
                    "fail_reason",
                    "error_code",
                    "price",
                )
            },
        ),
        (
            "Upstream",
            {
                "fields": (
                    "engine",
                    "upstream_account",
                    "upstream_job_id",
                    "engine_state",
                    "attempts",
                )
            },
        ),
        (
            "Timeline",
            {
                "fields": (
                    "created_at",
                    "submitted_at",
                    "started_at",
                    "finished_at",
                    "start_deadline",
                    "run_deadline",
                    "lease_expires_at",
                    "submit_claimed_at",
                )
            },
        ),
        ("Money and audit", {"fields": ("ledger", "audit_trail")}),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Task], search_term: str
    ) -> tuple[QuerySet[Task], bool]:
        """An id (ours or the upstream's) is looked up exactly, through their indexes.

        The general search ORs a prompt and organization ``icontains`` into the query, which
        makes every search a full scan of the tasks; a term of digits only (our ids, and the
        numeric ids midjourney-proxy upstreams use) does not need that.
        """
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(Q(pk=term) | Q(upstream_job_id=term) | Q(parent_id=term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A task's page is inspection only; the list's actions (which need the change
        # permission) are the writes, each through a service.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tasks carry ledger entries and children

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The inspection page, with the list's actions as buttons for this one task."""
        extra_context = dict(extra_context or {})
        task = Task.objects.filter(pk=object_id).values("status").first()
        if task is not None and self.has_change_permission(request):
            status = task["status"]
            buttons = []
            if status not in TERMINAL_STATUSES:
                buttons.append(("cancel_tasks", "Cancel (release the hold)"))
            if status in (Status.SUBMITTED, Status.IN_PROGRESS, Status.FAILURE):
                buttons.append(("retry_on_another_account", "Retry on another account"))
            if status not in TERMINAL_STATUSES:
                buttons.append(("fail_and_release", "Fail and release"))
            extra_context["task_actions"] = buttons
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="images")
    def images(self, obj: Task) -> str:
        result = obj.result or {}
        names = [result.get("image"), *(result.get("splits") or [])]
        links = [(file_url(name), name.rsplit("/", 1)[-1]) for name in names if name]
        if not links:
            return "—"
        return format_html_join(" · ", '<a href="{}" target="_blank">{}</a>', links)

    @admin.display(description="ledger entries")
    def ledger(self, obj: Task) -> str:
        entries = LedgerEntry.objects.filter(task=obj).order_by("id")
        rows = [
            (
                reverse("admin:billing_ledgerentry_change", args=[entry.pk]),
                entry.get_kind_display(),
                f"{entry.amount:,}",
            )
            for entry in entries
        ]
        if not rows:
            return "—"
        return format_html_join(" · ", '<a href="{}">{} {}</a>', rows)

    @admin.display(description="audit trail")
    def audit_trail(self, obj: Task) -> str:
        url = reverse("admin:operator_auditentry_changelist")
        query = urlencode({"object_type": "tasks.task", "q": obj.pk})
        return format_html('<a href="{}?{}">Operator actions on this task</a>', url, query)

    @admin.action(
        description="Cancel the selected tasks (holds are released)", permissions=["change"]
    )
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        rows = bounded(self, request, queryset.select_related("organization"))
        if rows is None:
            return
        done, skipped = 0, 0
        for task in rows:
            try:
                cancelled = task_cancel(
                    organization=task.organization,
                    task_id=task.pk,
                    reason=OPERATOR_CANCEL_REASON,
                )
            except ServiceError:
                skipped += 1
                continue
            audit_record(
                actor=request.user,
                action="task.cancel",
                obj=cancelled,
                before=_task_state(task),
                after=_task_state(cancelled),
            )
            done += 1
        self._report(request, done, skipped, "cancelled")

    @admin.action(
        description="Retry the selected tasks on another upstream account", permissions=["change"]
    )
    def retry_on_another_account(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        rows = bounded(self, request, queryset.select_related("organization"))
        if rows is None:
            return
        for task in rows:
            try:
                outcome = task_retry_on_another_account(task_id=task.pk)
            except ServiceError as exc:
                self.message_user(request, f"Task {task.pk}: {exc.message}", messages.ERROR)
                continue
            if outcome.retry_of is not None:
                audit_record(
                    actor=request.user,
                    action="task.retry",
                    obj=outcome.task,
                    before={**_task_state(task), "task": task.pk},
                    after={**_task_state(outcome.task), "task": outcome.task.pk},
                    reason=f"Retry of failed task {task.pk} as a new task.",
                )
                self.message_user(
                    request,
                    f"Task {task.pk} had failed; retried as new task {outcome.task.pk} on "
                    f"{outcome.account.name}.",
                    messages.SUCCESS,
                )
            else:
                audit_record(
                    actor=request.user,
                    action="task.retry",
                    obj=outcome.task,
                    before=_task_state(task),
                    after=_task_state(outcome.task),
                )
                self.message_user(
                    request,
                    f"Task {task.pk} moved to {outcome.account.name} and submitted again.",
                    messages.SUCCESS,
                )

    @admin.action(
        description="Fail the selected tasks and release their holds", permissions=["change"]
    )
    def fail_and_release(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        rows = bounded(self, request, queryset)
        if rows is None:
            return
        done, skipped = 0, 0
        for task in rows:
            try:
                failed = task_fail_by_operator(task_id=task.pk)
            except ServiceError:
                skipped += 1
                continue
            audit_record(
                actor=request.user,
                action="task.fail",
                obj=failed,
                before=_task_state(task),
                after=_task_state(failed),
            )
            done += 1
        self._report(request, done, skipped, "failed")

    @admin.action(description="Export the selected tasks as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Task]) -> StreamingHttpResponse:
        return csv_export(
            actor=request.user,
            model=Task,
            columns=[
                ("id", lambda t: t.pk),
                ("created_at", lambda t: t.created_at.isoformat()),
                ("organization_id", lambda t: t.organization_id),
                ("organization", lambda t: t.organization.name),
                ("action", lambda t: t.action),
                ("mode", lambda t: t.mode),
                ("status", lambda t: t.status),
                ("is_test", lambda t: t.is_test),
                ("engine", lambda t: t.engine),
                (
                    "upstream_account",
                    lambda t: t.upstream_account.name if t.upstream_account else "",
                ),
                ("upstream_job_id", lambda t: t.upstream_job_id),
                ("price", lambda t: t.price),
                ("error_code", lambda t: t.error_code),
                ("fail_reason", lambda t: t.fail_reason),
                ("finished_at", lambda t: t.finished_at.isoformat() if t.finished_at else ""),
            ],
            rows=queryset.select_related("organization", "upstream_account").iterator(
                chunk_size=2000
            ),
            filename="tasks.csv",
        )

    def _report(self, request: HttpRequest, done: int, skipped: int, verb: str) -> None:
        message = f"{done} task(s) {verb}."
        if skipped:
            message += f" {skipped} had already finished and were left unchanged."
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)


@admin.register(BannedWord)
class BannedWordAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("word", "is_active", "created_at")
    list_editable = ("is_active",)
    list_filter = ("is_active",)
    search_fields = ("word",)
    ordering = ("word",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("created_at",)
