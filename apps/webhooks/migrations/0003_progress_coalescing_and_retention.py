"""What a message reports (for coalescing progress) and a superseded state."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0002_event_type_task_created'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhookevent',
            name='progress_only',
            field=models.BooleanField(default=False, help_text='Reports the same status as the previous message to this target (progress).'),
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='task_status',
            field=models.CharField(blank=True, help_text="The task's status this message reports.", max_length=16),
        ),
        migrations.AlterField(
            model_name='webhookdelivery',
            name='state',
            field=models.CharField(choices=[('pending', 'Pending'), ('succeeded', 'Succeeded'), ('failed', 'Failed (retry scheduled)'), ('dead', 'Dead (no more retries)'), ('superseded', 'Superseded (not sent)')], default='pending', max_length=16),
        ),
        migrations.AlterField(
            model_name='webhookevent',
            name='state',
            field=models.CharField(choices=[('pending', 'Pending'), ('succeeded', 'Succeeded'), ('dead', 'Dead'), ('superseded', 'Superseded by a newer progress message (not sent)')], default='pending', max_length=16),
        ),
    ]
