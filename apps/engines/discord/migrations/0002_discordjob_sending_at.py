"""A prepared job row remembers when its interaction was about to leave (``sending_at``).

Rows already prepared when this runs may have been sent: they get their creation time, so they
are looked up (never resent at once) like any row whose outcome is unknown.
"""

from django.db import migrations, models
from django.db.models import F


def existing_prepared_rows_may_have_been_sent(apps, schema_editor):
    DiscordJob = apps.get_model("discord_engine", "DiscordJob")
    DiscordJob.objects.filter(phase="prepared").update(sending_at=F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("discord_engine", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="discordjob",
            name="sending_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(
            existing_prepared_rows_may_have_been_sent, migrations.RunPython.noop, elidable=True
        ),
    ]
