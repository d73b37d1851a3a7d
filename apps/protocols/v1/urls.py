from django.urls import include, path

from . import upload_views, views

app_name = "v1"

urlpatterns = [
    path("balance", views.BalanceView.as_view(), name="balance"),
    path("tasks", views.TaskListView.as_view(), name="tasks"),
    path("tasks/<str:task_id>", views.TaskDetailView.as_view(), name="task"),
    path("tasks/<str:task_id>/modal", views.TaskModalView.as_view(), name="task-modal"),
    path("tasks/<str:task_id>/cancel", views.TaskCancelView.as_view(), name="task-cancel"),
    path("uploads", upload_views.UploadView.as_view(), name="uploads"),
    path("keys", views.KeyListView.as_view(), name="keys"),
    path("keys/<str:key_id>", views.KeyDetailView.as_view(), name="key"),
    path("", include("apps.protocols.v1.billing_urls")),
]

# The public status of each mode (no key): apps/protocols/v1/status_views.py.
from . import status_views  # noqa: E402

urlpatterns += [path("status", status_views.StatusView.as_view(), name="status")]

# Webhook endpoints, the signing secret and the delivery log (apps/protocols/v1/webhook_views.py).
from . import webhook_views  # noqa: E402

urlpatterns += [
    path(
        "webhooks/endpoints",
        webhook_views.WebhookEndpointListView.as_view(),
        name="webhook-endpoints",
    ),
    path(
        "webhooks/endpoints/<str:endpoint_id>",
        webhook_views.WebhookEndpointDetailView.as_view(),
        name="webhook-endpoint",
    ),
    path(
        "webhooks/endpoints/<str:endpoint_id>/test",
        webhook_views.WebhookEndpointTestView.as_view(),
        name="webhook-endpoint-test",
    ),
    path("webhooks/secret", webhook_views.WebhookSecretView.as_view(), name="webhook-secret"),
    path(
        "webhooks/secret/rotate",
        webhook_views.WebhookSecretRotateView.as_view(),
        name="webhook-secret-rotate",
    ),
    path(
        "webhooks/deliveries",
        webhook_views.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/deliveries/<str:delivery_id>",
        webhook_views.WebhookDeliveryDetailView.as_view(),
        name="webhook-delivery",
    ),
    path(
        "webhooks/deliveries/<str:delivery_id>/resend",
        webhook_views.WebhookDeliveryResendView.as_view(),
        name="webhook-delivery-resend",
    ),
]

# The organization's own upstream accounts (apps/protocols/v1/upstream_views.py).
from . import upstream_views  # noqa: E402

urlpatterns += [
    path(
        "upstream-accounts",
        upstream_views.UpstreamAccountListView.as_view(),
        name="upstream-accounts",
    ),
    path(
        "upstream-accounts/<str:account_id>",
        upstream_views.UpstreamAccountDetailView.as_view(),
        name="upstream-account",
    ),
]
