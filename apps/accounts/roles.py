"""What each membership role may do (SPEC §1). The single source of truth for role checks."""

from __future__ import annotations

from enum import StrEnum

from .models import Role


class Capability(StrEnum):
    VIEW_TASKS = "view_tasks"
    CREATE_TASKS = "create_tasks"
    MANAGE_KEYS = "manage_keys"
    MANAGE_WEBHOOKS = "manage_webhooks"
    #: The organization's own upstream accounts (bring your own accounts).
    MANAGE_UPSTREAM_ACCOUNTS = "manage_upstream_accounts"
    MANAGE_MEMBERS = "manage_members"
    MANAGE_SETTINGS = "manage_settings"
    MANAGE_BILLING = "manage_billing"
    DELETE_ORGANIZATION = "delete_organization"


_MEMBER = frozenset({Capability.VIEW_TASKS, Capability.CREATE_TASKS})
_ADMIN = _MEMBER | {
    Capability.MANAGE_KEYS,
    Capability.MANAGE_WEBHOOKS,
    Capability.MANAGE_MEMBERS,
    Capability.MANAGE_SETTINGS,
    Capability.MANAGE_UPSTREAM_ACCOUNTS,
}
_OWNER = _ADMIN | {Capability.MANAGE_BILLING, Capability.DELETE_ORGANIZATION}

ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.MEMBER: _MEMBER,
    Role.ADMIN: _ADMIN,
    Role.OWNER: _OWNER,
}


def role_allows(role: str, capability: Capability) -> bool:
    return capability in ROLE_CAPABILITIES.get(role, frozenset())
