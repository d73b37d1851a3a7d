import os

if os.environ.get("MJGATE_CELERY_PROCESS") == "1":
    # A process started by config/celery_cli.py: leave out what no Celery process uses before
    # Celery and kombu are imported below (issue 15, P6).
    import warnings

    # ``python -m config.celery_cli`` imports this package first, so the module is loaded here
    # before runpy runs it as ``__main__``; its ``__main__`` hands over to this copy.
    warnings.filterwarnings(
        "ignore",
        message=r"'config\.celery_cli' found in sys\.modules",
        category=RuntimeWarning,
    )
    from .celery_cli import leave_out_extras

    leave_out_extras()

from .celery import app as celery_app

__all__ = ("celery_app",)
