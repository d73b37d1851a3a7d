from django.urls import path

from . import views

urlpatterns = [
    # Included under ``engines/``: the mjproxy hook URLs already given to upstreams
    # (``/engines/mjproxy/callback/<account>/<token>``) keep working.
    path(
        "<str:engine>/callback/<int:account_id>/<str:token>",
        views.engine_callback,
        name="engine-callback",
    ),
]
