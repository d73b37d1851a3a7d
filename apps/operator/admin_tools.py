"""Shared pieces of the operator admin: the audit mixin, a paginator that does not count big
tables, bounded action selections, CSV export and intermediate action forms."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import LogEntry
from django.core.paginator import Paginator
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property

from .services import audit_diff, audit_record, audit_snapshot, object_type_of

#: Most rows one admin action may touch; "select all" over a big table is refused, not run.
MAX_ACTION_ROWS = 500


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` + 1 rows instead of the whole (filtered) table.

    The changelist needs a count for its page links; a full ``COUNT(*)`` over millions of
    tasks is the slowest query on the page and nobody pages that far. Past the cap the list
    says "more than N" (see ``templates/admin/pagination.html``) and stops at the cap's page.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if isinstance(object_list, QuerySet):
            return object_list.order_by().values("pk")[: self.cap + 1].count()
        return len(object_list)

    @property
    def is_capped(self) -> bool:
        return self.count > self.cap


class AuditedAdminMixin(admin.ModelAdmin):
    """Records every add, change and delete made in the admin in the audit log.

    Put it first among the bases (``class XAdmin(AuditedAdminMixin, admin.ModelAdmin)``).
    Changes made by views that do not go through ``save_model`` (the password form of the user
    admin) are caught in ``log_change``. Inline rows are recorded one entry each.
    """

    def _audited(self, request: HttpRequest) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] | None = getattr(request, "_operator_audited", None)
        if seen is None:
            seen = set()
            request._operator_audited = seen  # type: ignore[attr-defined]
        return seen

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before = None
        if change:
            stored = type(obj)._default_manager.filter(pk=obj.pk).first()
            before = audit_snapshot(stored) if stored is not None else None
        self.perform_save(request, obj, form, change)
        old, new = audit_diff(before, audit_snapshot(obj), obj=obj)
        self._audited(request).add((object_type_of(obj), str(obj.pk)))
        if change and not old and not new:
            return
        audit_record(
            actor=request.user,
            action="admin.change" if change else "admin.add",
            obj=obj,
            before=old or None,
            after=new,
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Many-to-many changes (a user's groups and permissions, a group's permissions) are
        not fields of the row ``save_model`` compares: recorded here, as their own entry."""
        obj = form.instance
        names = [f.name for f in obj._meta.many_to_many if f.name in form.fields]
        before = {name: _related_labels(obj, name) for name in names} if change else {}
        super().save_related(request, form, formsets, change)
        after = {name: _related_labels(obj, name) for name in names}
        changed = [name for name in names if before.get(name, []) != after[name]]
        if changed:
            audit_record(
                actor=request.user,
                action="admin.change",
                obj=obj,
                before={name: before.get(name, []) for name in changed},
                after={name: after[name] for name in changed},
            )

    def perform_save(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """The write itself; override to save through a service instead of ``obj.save()``."""
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        kind, pk, text = object_type_of(obj), str(obj.pk), str(obj)
        old, _ = audit_diff(audit_snapshot(obj), None, obj=obj)
        super().delete_model(request, obj)
        audit_record(
            actor=request.user,
            action="admin.delete",
            object_type=kind,
            object_id=pk,
            object_repr=text,
            before=old,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        gone = [
            (object_type_of(obj), str(obj.pk), str(obj), audit_diff(audit_snapshot(obj), None)[0])
            for obj in queryset
        ]
        super().delete_queryset(request, queryset)
        for kind, pk, text, old in gone:
            audit_record(
                actor=request.user,
                action="admin.delete",
                object_type=kind,
                object_id=pk,
                object_repr=text,
                before=old,
            )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        deleted = [
            (object_type_of(f.instance), str(f.instance.pk), str(f.instance), f.instance)
            for f in formset.deleted_forms
            if f.instance.pk is not None
        ]
        deleted_snapshots = {
            pk: audit_diff(audit_snapshot(obj), None, obj=obj)[0] for _, pk, _, obj in deleted
        }
        initial = {
            id(f.instance): dict(f.initial) for f in formset.forms if f.instance.pk is not None
        }
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            _, new = audit_diff(None, audit_snapshot(obj), obj=obj)
            audit_record(actor=request.user, action="admin.add", obj=obj, after=new)
        for obj, changed in formset.changed_objects:
            fields = [name for name in changed if not name.startswith("_")]
            before = {name: initial.get(id(obj), {}).get(name) for name in fields}
            after = {name: obj._meta.get_field(name).value_from_object(obj) for name in fields}
            old, new = audit_diff(before, after, obj=obj)
            audit_record(actor=request.user, action="admin.change", obj=obj, before=old, after=new)
        for kind, pk, text, _ in deleted:
            audit_record(
                actor=request.user,
                action="admin.delete",
                object_type=kind,
                object_id=pk,
                object_repr=text,
                before=deleted_snapshots[pk],
            )

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> LogEntry:
        entry = super().log_change(request, obj, message)
        if (object_type_of(obj), str(obj.pk)) not in self._audited(request):
            # A change made outside save_model (e.g. the user admin's password form): what
            # changed is known only by name, which is all the history page shows too.
            audit_record(
                actor=request.user,
                action="admin.change",
                obj=obj,
                reason=LogEntry(change_message=entry.change_message).get_change_message(),
            )
        return entry


def _related_labels(obj: Any, name: str) -> list[str]:
    return sorted(str(related) for related in getattr(obj, name).all())


def bounded(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
) -> list[Any] | None:
    """The selected rows, or None (with a message) if more than ``MAX_ACTION_ROWS``."""
    rows = list(queryset[: MAX_ACTION_ROWS + 1])
    if len(rows) > MAX_ACTION_ROWS:
        modeladmin.message_user(
            request,
            f"Select at most {MAX_ACTION_ROWS} rows for this action; narrow the list with "
            f"filters or a search first. Nothing was changed.",
            messages.ERROR,
        )
        return None
    return rows


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_export(
    *,
    actor: Any,
    model: type[models.Model],
    columns: Sequence[tuple[str, Callable[[Any], Any]]],
    rows: Iterable[Any],
    filename: str,
) -> StreamingHttpResponse:
    """Stream ``rows`` as CSV with exactly ``columns`` (an allow-list: nothing else leaves).

    The export itself is recorded in the audit log: who took which data out, and when.
    """
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow([header for header, _ in columns])
        for row in rows:
            yield writer.writerow([_cell(getter(row)) for _, getter in columns])

    audit_record(
        actor=actor,
        action="admin.export",
        object_type=f"{model._meta.app_label}.{model._meta.model_name}",
        after={"columns": [header for header, _ in columns]},
    )
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    text = str(value)
    # Spreadsheet formula injection: a cell starting with one of these is shown, not run.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required. Stored in the audit log with your name.",
    )

    def clean_reason(self) -> str:
        reason = " ".join(str(self.cleaned_data["reason"]).split())
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


def action_form_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    rows: Sequence[Any],
    form: forms.Form,
    action_name: str,
    title: str,
    intro: str,
    submit_label: str,
) -> TemplateResponse:
    """The intermediate page of an action that needs input (a reason, an amount)."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "opts": modeladmin.model._meta,
        "form": form,
        "rows": rows,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": action_name,
        "submit_label": submit_label,
    }
    return TemplateResponse(request, "admin/operator/action_form.html", context)
