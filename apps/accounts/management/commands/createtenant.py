"""createtenant --email E [--tier FREE|VIP|PREMIUM] [--tokens N] [--json] (SPEC §11)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.provisioning import tenant_provision
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = "Create a user, their organization and a live API key with the midjourney permission."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--tier", default="FREE", help="FREE, VIP or PREMIUM (default FREE).")
        parser.add_argument("--tokens", type=int, default=0, help="Initial token balance.")
        parser.add_argument("--name", default=None, help="Organization name.")
        parser.add_argument("--password", default=None, help="Dashboard password (optional).")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenant = tenant_provision(
                email=options["email"],
                tier_code=options["tier"],
                tokens=options["tokens"],
                password=options["password"],
                organization_name=options["name"],
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        organization = tenant.organization
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "organization": {
                            "id": organization.pk,
                            "name": organization.name,
                            "tier": organization.tier.code,
                            "tokens": options["tokens"],
                        },
                        "user": tenant.user.email,
                        "api_key": tenant.issued_key.plaintext,
                    }
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Created organization {organization.name} "
                f"(id {organization.pk}, tier {organization.tier.code})."
            )
        )
        self.stdout.write(f"API key (shown once): {tenant.issued_key.plaintext}")
