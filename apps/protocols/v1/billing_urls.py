from django.urls import path

from . import billing_views

urlpatterns = [
    path("ledger", billing_views.LedgerView.as_view(), name="ledger"),
    path("prices", billing_views.PricesView.as_view(), name="prices"),
    path("plan", billing_views.PlanView.as_view(), name="plan"),
]
