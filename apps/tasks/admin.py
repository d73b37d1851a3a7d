"""Operator admin for tasks and banned words (SPEC §10): read-mostly, actions call services.

A task's fields are never edited here — every status change is a compare-and-set in the task
lifecycle, and money moves only with them — so the change page is a read-only inspection page
and the list's actions are the only writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.accounts.models import User
from apps.billing.ledger import ledger_refund_task
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


def _to_the_second(value: datetime | None) -> str:
    """Task times to the second, in UTC: the admin's own format stops at the minute."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds_column(field: str, label: str) -> Any:
    """An admin column showing a task timestamp to the second."""

    @admin.display(description=label)
    def column(self: Any, obj: Task) -> str:
        return _to_the_second(getattr(obj, field))

    return column


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
    # Fits 1280 px: the picture and the prompt say which task it is; the account, progress and
    # error code sit under the status instead of in columns of their own.
    list_display = (
        "thumbnail",
        "id",
        "prompt_short",
        "organization",
        "action",
        "status_display",
        "mode",
        "tokens",
        "created_at",
    )
    list_display_links = ("thumbnail", "id")
    list_filter = ("status", "mode", "action", EngineFilter, "is_test", "upstream_account")
    search_fields = ("=id", "prompt", "organization__name", "=upstream_job_id")
    list_select_related = ("organization", "upstream_account")
    show_full_result_count = False
    # Counting every task for the page links is the slowest query of the list; stop at a cap.
    paginator = CappedCountPaginator
    # "Show counts" would COUNT every filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    ordering = ("-created_at",)
    actions = (
        "cancel_tasks",
        "retry_on_another_account",
        "fail_and_release",
        "refund_tasks",
        "export_csv",
    )
    readonly_fields = (
        "images",
        "buttons_display",
        "ledger",
        "audit_trail",
        "retry_links",
        "created_at_s",
        "submitted_at_s",
        "started_at_s",
        "finished_at_s",
        "start_deadline_s",
        "run_deadline_s",
        "lease_expires_at_s",
        "submit_claimed_at_s",
        "tokens",
    )
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
                    "retry_links",
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
                    "buttons_display",
                    "properties",
                    "seed",
                    "fail_reason",
                    "error_code",
                    "tokens",
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
                    "created_at_s",
                    "submitted_at_s",
                    "started_at_s",
                    "finished_at_s",
                    "start_deadline_s",
                    "run_deadline_s",
                    "lease_expires_at_s",
                    "submit_claimed_at_s",
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
        task = Task.objects.filter(pk=object_id).values("status", "price", "is_test").first()
        if task is not None and self.has_change_permission(request):
            status = task["status"]
            buttons = []
            if status not in TERMINAL_STATUSES:
                buttons.append(("cancel_tasks", "Cancel (release the hold)"))
            if status in (Status.SUBMITTED, Status.IN_PROGRESS, Status.FAILURE):
                buttons.append(("retry_on_another_account", "Retry on another account"))
            if status not in TERMINAL_STATUSES:
                buttons.append(("fail_and_release", "Fail and release"))
            if status == Status.SUCCESS and task["price"] and not task["is_test"]:
                buttons.append(("refund_tasks", "Refund this task"))
            extra_context["task_actions"] = buttons
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="")
    def thumbnail(self, obj: Task) -> str:
        result = obj.result or {}
        name = result.get("thumb") or result.get("image")
        if not name:
            return mark_safe('<span class="operator-thumb empty" aria-hidden="true"></span>')
        return format_html(
            '<img class="operator-thumb" src="{}" alt="" loading="lazy">', file_url(name)
        )

    @admin.display(description="prompt", ordering="prompt")
    def prompt_short(self, obj: Task) -> str:
        text = obj.prompt or ""
        return format_html(
            '<span class="operator-prompt" title="{}">{}</span>',
            text,
            text if len(text) <= 90 else text[:89] + "…",
        )

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Task) -> str:
        notes = []
        if obj.status in (Status.SUBMITTED, Status.IN_PROGRESS):
            notes.append(f"{obj.progress}%")
        if obj.upstream_account_id:
            notes.append(str(obj.upstream_account))
        if obj.error_code:
            notes.append(obj.error_code)
        if obj.is_test:
            notes.append("test")
        return format_html(
            '{}<div class="operator-note">{}</div>', obj.get_status_display(), " · ".join(notes)
        )

    @admin.display(description="tokens", ordering="price")
    def tokens(self, obj: Task) -> str:
        """The price held for the task (charged only if it succeeds), formatted."""
        return f"{obj.price:,}"

    @admin.display(description="buttons")
    def buttons_display(self, obj: Task) -> str:
        buttons = obj.buttons or []
        if not buttons:
            return "—"
        return format_html_join(
            " ",
            '<span class="operator-chip" title="{}">{}</span>',
            (
                (b.get("custom_id", ""), " ".join(p for p in (b.get("emoji"), b.get("label")) if p))
                for b in buttons
                if isinstance(b, dict)
            ),
        )

    @admin.display(description="retries")
    def retry_links(self, obj: Task) -> str:
        """A task an operator retried as a new task, and the retry, link to each other."""
        links: list[tuple[str, str]] = []
        original = (obj.engine_state or {}).get("retry_of")
        if original:
            url = reverse("admin:tasks_task_change", args=[original])
            links.append((url, f"Retry of task {original}"))
        for retry in Task.objects.filter(engine_state__retry_of=obj.pk).values_list(
            "pk", flat=True
        ):
            url = reverse("admin:tasks_task_change", args=[retry])
            links.append((url, f"Retried as task {retry}"))
        if not links:
            return "—"
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    created_at_s = _seconds_column("created_at", "created")
    submitted_at_s = _seconds_column("submitted_at", "queued")
    started_at_s = _seconds_column("started_at", "started")
    finished_at_s = _seconds_column("finished_at", "finished")
    start_deadline_s = _seconds_column("start_deadline", "start deadline")
    run_deadline_s = _seconds_column("run_deadline", "run deadline")
    lease_expires_at_s = _seconds_column("lease_expires_at", "lease expires at")
    submit_claimed_at_s = _seconds_column("submit_claimed_at", "submit claimed at")

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

    @admin.action(
        description="Refund the selected tasks (a refund ledger entry per charged task)",
        permissions=["change"],
    )
    def refund_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        rows = bounded(self, request, queryset)
        if rows is None:
            return
        operator = request.user
        assert isinstance(operator, User)
        for task in rows:
            try:
                # The refund and its audit record commit together or not at all.
                with transaction.atomic():
                    entry = ledger_refund_task(
                        task=task, operator=operator, reason=f"Refund of task {task.pk}."
                    )
                    audit_record(
                        actor=operator,
                        action="task.refund",
                        obj=task,
                        before={"task": task.pk},
                        after={"ledger_entry": entry.pk, "amount": entry.delta_available},
                        reason=entry.reason,
                        # A second press returns the same entry; it is recorded once too.
                        dedupe_key=f"task.refund:{task.pk}",
                    )
            except ServiceError as exc:
                self.message_user(request, f"Task {task.pk}: {exc.message}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"Task {task.pk}: refunded {entry.delta_available:,} tokens (ledger entry "
                f"{entry.pk}); available is now {entry.available_after:,}.",
                messages.SUCCESS,
            )

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
