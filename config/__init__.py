import os

if os.environ.get("MJGATE_CELERY_PROCESS") == "1":
    # A process started by config/celery_cli.py: leave out what no Celery process uses before
    # Celery and kombu are imported below (issue 15, P6).
    from .celery_cli import leave_out_extras

    leave_out_extras()

from .celery import app as celery_app

__all__ = ("celery_app",)
