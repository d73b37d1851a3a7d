"""Tell the task domain how each dialect renders a task in a hook body (SPEC §7).

Called once from ``ProtocolsConfig.ready``. The registry lives on the tasks side
(``apps.tasks.events``), so the dependency points from the protocols to the domain and the
webhook outbox never sees a task.
"""

from __future__ import annotations

from apps.tasks.events import register_task_payload
from apps.tasks.models import Protocol

from .mjproxy.payloads import queued_task_json as mjproxy_task_json
from .ttapi.payloads import job_json
from .v1.payloads import queued_task_json as native_task_json


def register_payloads() -> None:
    """A queued task's body says where it stands in its pool's queue, as fetch does."""
    register_task_payload(Protocol.MJPROXY, mjproxy_task_json)
    register_task_payload(Protocol.TTAPI, job_json)
    register_task_payload(Protocol.NATIVE, native_task_json)
