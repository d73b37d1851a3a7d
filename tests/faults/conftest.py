from tests.integration_support import celery_worker, celery_worker_factory  # noqa: F401
