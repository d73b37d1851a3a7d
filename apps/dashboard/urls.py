from django.urls import path

from .views import (
    billing,
    editor,
    keys,
    mailbox,
    orgs,
    overview,
    status,
    tasks,
    team,
    upstream,
    webhooks,
)

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("status/", status.status, name="status"),
    path("create/", tasks.create, name="create"),
    path("gallery/", tasks.gallery, name="gallery"),
    path("tasks/", tasks.history, name="history"),
    path("tasks/<str:task_id>/", tasks.detail, name="task-detail"),
    path("tasks/<str:task_id>/card/", tasks.card, name="task-card"),
    path("tasks/<str:task_id>/download/<str:part>/", tasks.download, name="task-download"),
    path("tasks/<str:task_id>/action/", tasks.action, name="task-action"),
    path("tasks/<str:task_id>/input/", tasks.task_input, name="task-input"),
    path("tasks/<str:task_id>/cancel/", tasks.cancel, name="task-cancel"),
    path("tasks/<str:task_id>/editor/", editor.editor, name="task-editor"),
    path("keys/", keys.index, name="keys"),
    path("keys/new/", keys.create, name="key-create"),
    path("keys/<int:key_id>/revoke/", keys.revoke, name="key-revoke"),
    path("webhooks/", webhooks.index, name="webhooks"),
    path("webhooks/endpoints/new/", webhooks.endpoint_new, name="webhook-endpoint-create"),
    path(
        "webhooks/endpoints/<int:endpoint_id>/toggle/",
        webhooks.endpoint_toggle,
        name="webhook-endpoint-toggle",
    ),
    path(
        "webhooks/endpoints/<int:endpoint_id>/delete/",
        webhooks.endpoint_delete,
        name="webhook-endpoint-delete",
    ),
    path(
        "webhooks/endpoints/<int:endpoint_id>/test/",
        webhooks.endpoint_test,
        name="webhook-endpoint-test",
    ),
    path(
        "webhooks/deliveries/<int:delivery_id>/resend/",
        webhooks.delivery_resend,
        name="webhook-delivery-resend",
    ),
    path("webhooks/secret/rotate/", webhooks.secret_rotate, name="webhook-secret-rotate"),
    path("upstream-accounts/", upstream.index, name="upstream-accounts"),
    path("upstream-accounts/new/", upstream.create, name="upstream-account-create"),
    path("upstream-accounts/<int:account_id>/", upstream.edit, name="upstream-account-edit"),
    path(
        "upstream-accounts/<int:account_id>/toggle/",
        upstream.toggle,
        name="upstream-account-toggle",
    ),
    path(
        "upstream-accounts/<int:account_id>/delete/",
        upstream.delete,
        name="upstream-account-delete",
    ),
    path("billing/", billing.index, name="billing"),
    path("billing/buy/", billing.buy, name="billing-buy"),
    path("billing/upgrade/", billing.upgrade, name="billing-upgrade"),
    path("billing/portal/", billing.portal, name="billing-portal"),
    path("team/", team.index, name="team"),
    path("team/invite/", team.invite, name="team-invite"),
    path(
        "team/invitations/<int:invitation_id>/revoke/",
        team.invitation_cancel,
        name="team-invitation-revoke",
    ),
    path("team/members/<int:membership_id>/role/", team.member_role, name="team-member-role"),
    path("team/members/<int:membership_id>/remove/", team.member_remove, name="team-member-remove"),
    path("invitations/<str:token>/", team.invitation_open, name="invitation"),
    path("orgs/switch/", orgs.switch, name="organization-switch"),
    path("orgs/new/", orgs.new, name="organization-new"),
    # Development settings only (MAILBOX_DIR); a 404 everywhere else.
    path("dev/mailbox/", mailbox.index, name="mailbox"),
]
