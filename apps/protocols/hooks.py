"""Tell the webhooks app how each dialect renders a task in a hook body (SPEC §7)."""

from __future__ import annotations

from apps.tasks.models import Protocol


def register_payloads() -> None:
    try:
        from apps.webhooks.payloads import register_task_payload
    except ImportError:  # pragma: no cover - the webhooks app is optional
        return
    from .mjproxy.payloads import task_json as mjproxy_task_json
    from .ttapi.payloads import job_json
    from .v1.payloads import task_json as native_task_json

    register_task_payload(Protocol.MJPROXY, mjproxy_task_json)
    register_task_payload(Protocol.TTAPI, job_json)
    register_task_payload(Protocol.NATIVE, native_task_json)
