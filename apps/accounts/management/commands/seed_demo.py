from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.demo import demo_seed

#: The banner's copy in the var folder, for scripts/devrun.py.
BANNER_FILE = "demo-banner.txt"


class Command(BaseCommand):
    help = "Create (or refresh) the demo operator, tenant, API keys and sandbox upstream."

    def handle(self, *args: Any, **options: Any) -> None:
        if getattr(settings, "MJGATE_PRODUCTION", False):
            # A superuser with a published password (MFA would not help: its owner could set
            # one up) and a million free tokens have no place on a real site.
            raise CommandError(
                "seed_demo creates a superuser with a published password; it does not run "
                "with production settings. Use createtenant and createsuperuser instead."
            )
        seed = demo_seed()
        base = settings.PUBLIC_BASE_URL
        lines = [
            "",
            "mjgate demo is ready",
            f"  Dashboard:      {base}/",
            f"  Operator admin: {base}/{settings.ADMIN_URL}  ({seed.operator_email} / {seed.password})",
            f"  Demo tenant:    {seed.tenant_email} / {seed.password}  (organization {seed.organization.name})",
            f"  Live API key:   {seed.live_key}",
            f"  Test API key:   {seed.test_key}",
            f"  API docs:       {base}/api/docs/",
            *(
                [f"  Mailbox:        {base}/dev/mailbox/  (sign-up and reset mails land here)"]
                if getattr(settings, "MAILBOX_DIR", None)
                else []
            ),
            "",
            "  Try:",
            f"    curl -s -H 'mj-api-secret: {seed.live_key}' {base}/api/v1/balance",
            "",
        ]
        banner = "\n".join(lines)
        self.stdout.write(banner)
        # scripts/devrun.py prints it again once every process is up, below their start-up
        # output, where it would otherwise scroll away.
        path = Path(settings.VAR_DIR) / BANNER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(banner + "\n", encoding="utf-8")
        os.chmod(path, 0o600)  # it holds the demo keys, like var/demo-keys.json
