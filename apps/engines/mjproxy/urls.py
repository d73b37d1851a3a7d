from django.urls import path

from . import views

urlpatterns = [
    path(
        "callback/<int:account_id>/<str:token>",
        views.callback,
        name="mjproxy-callback",
    ),
]
