"""A fresh install ships a default banned-word list (SPEC §4.5), which operators edit in the
admin (Banned words). Seeded only into an empty list: an installation whose operators already
chose their words keeps exactly those.

Words are matched whole-word and case-insensitively (a hyphenated compound is one word, so
"gore" does not block "Gore-tex"). The list is deliberately short: content Midjourney itself
refuses and that no legitimate prompt needs, so a refusal here saves a failed upstream job.
"""

from django.db import migrations

DEFAULT_BANNED_WORDS = (
    "child porn",
    "child pornography",
    "csam",
    "lolicon",
    "shotacon",
    "underage nude",
    "underage sex",
    "bestiality",
    "necrophilia",
    "snuff film",
    "gore",
    "beheading",
    "decapitated",
    "disembowelled",
    "disemboweled",
    "dismembered",
    "mutilated corpse",
)


def seed_default_banned_words(apps, schema_editor):
    BannedWord = apps.get_model("tasks", "BannedWord")
    if BannedWord.objects.exists():
        return
    BannedWord.objects.bulk_create(BannedWord(word=word) for word in DEFAULT_BANNED_WORDS)


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0007_task_queue_seq"),
    ]

    operations = [
        migrations.RunPython(seed_default_banned_words, migrations.RunPython.noop),
    ]
