from django.urls import include, path

from . import views

app_name = "v1"

urlpatterns = [
    path("balance", views.BalanceView.as_view(), name="balance"),
    path("tasks", views.TaskListView.as_view(), name="tasks"),
    path("tasks/<str:task_id>", views.TaskDetailView.as_view(), name="task"),
    path("tasks/<str:task_id>/modal", views.TaskModalView.as_view(), name="task-modal"),
    path("tasks/<str:task_id>/cancel", views.TaskCancelView.as_view(), name="task-cancel"),
    path("keys", views.KeyListView.as_view(), name="keys"),
    path("keys/<str:key_id>", views.KeyDetailView.as_view(), name="key"),
    path("", include("apps.protocols.v1.billing_urls")),
]
