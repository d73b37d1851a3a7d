"""The discord engine's own records: what it sent, what the bot answered, who holds a gateway."""

from __future__ import annotations

from django.db import models

from apps.engines.models import UpstreamAccount


class Phase(models.TextChoices):
    PREPARED = "prepared", "Prepared (not yet sent)"
    SENT = "sent", "Sent"
    MODAL = "modal", "Waiting for a modal to answer"
    MODAL_SENT = "modal_sent", "Modal answered"
    RUNNING = "running", "Running"
    SUCCESS = "success", "Succeeded"
    FAILURE = "failure", "Failed"
    REFUSED = "refused", "Refused, not run (may go elsewhere)"


LIVE_PHASES = (Phase.SENT, Phase.MODAL, Phase.MODAL_SENT, Phase.RUNNING)


class DiscordJob(models.Model):
    """One interaction we sent for a task, and everything the bot said about it since.

    The nonce is ours (a snowflake-shaped number) and ties the interaction to the bot's first
    reply; the gateway and the engine's REST fallback both fill the row in, the engine's ``poll``
    only reads it. A row is written *before* the interaction goes out (``prepared``) and moved
    to ``sent`` after Discord answered, so a worker that died in between leaves a trace that
    ``find_job`` resolves instead of sending the interaction a second time.
    """

    nonce = models.CharField(max_length=32, primary_key=True)
    account = models.ForeignKey(UpstreamAccount, on_delete=models.CASCADE, related_name="+")
    task_id = models.CharField(max_length=32, db_index=True)
    action = models.CharField(max_length=16)
    #: Which interaction: a command name (imagine, describe …) or the pressed custom id.
    command = models.CharField(max_length=200)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PREPARED)
    bot_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32)
    #: The message the button was pressed on (follow-ups), which replies reference.
    parent_message_id = models.CharField(max_length=32, blank=True)
    interaction_id = models.CharField(max_length=32, blank=True)
    #: The nonce of the second interaction (the modal's answer), which the bot's reply carries.
    second_nonce = models.CharField(max_length=32, blank=True, db_index=True)
    #: The bot's first reply (carries our nonce) and the final result message.
    message_id = models.CharField(max_length=32, blank=True, db_index=True)
    result_message_id = models.CharField(max_length=32, blank=True, db_index=True)
    #: The prompt we sent (commands only): finds the job's messages when its nonce was lost.
    prompt = models.TextField(blank=True)
    #: The prompt as the bot wrote it in its first reply; the result message repeats it.
    bot_prompt = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    image_url = models.TextField(blank=True)
    is_grid = models.BooleanField(default=False)
    final_prompt = models.TextField(blank=True)
    components = models.JSONField(default=list, blank=True)
    job_hash = models.CharField(max_length=64, blank=True)
    #: The modal the bot opened (id, custom_id, field) for the second step.
    modal = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    fail_reason = models.TextField(blank=True)
    #: When the interaction's POST was about to leave (written just before each try): a
    #: prepared row without it was certainly never sent. Not a record that Discord got it (a
    #: worker may die before the POST leaves; such a row is closed as refused after
    #: ``LOST_SUBMIT_SECONDS``). Written only while the row is prepared, so a row a look-up
    #: closed as never sent is never sent afterwards.
    sending_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["account", "phase"], name="discordjob_account_phase")]

    def __str__(self) -> str:
        return f"discord job {self.nonce} ({self.phase}) for task {self.task_id}"


class GatewayLease(models.Model):
    """Which gateway process holds an account's WebSocket, until when.

    A holder renews its leases well before they expire; a process that died stops renewing
    and another takes the account over once ``expires_at`` passes. Taking and renewing are
    compare-and-set updates, so an account is never connected by two processes at once.
    The session id and sequence let the next holder resume instead of identifying again.
    """

    account = models.OneToOneField(
        UpstreamAccount, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    holder = models.CharField(max_length=120, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    session_id = models.CharField(max_length=64, blank=True)
    sequence = models.BigIntegerField(null=True, blank=True)
    user_id = models.CharField(max_length=32, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"gateway lease of account {self.account_id} by {self.holder or 'nobody'}"
