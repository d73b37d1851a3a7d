from django.db import migrations

TIERS = [
    # code, name, max unfinished tasks, default, order
    ("FREE", "Free", 3, True, 0),
    ("VIP", "VIP", 20, False, 1),
    ("PREMIUM", "Premium", 50, False, 2),
]


def seed(apps, schema_editor):
    MembershipTier = apps.get_model("accounts", "MembershipTier")
    for code, name, limit, is_default, order in TIERS:
        MembershipTier.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "max_unfinished_tasks": limit,
                "is_default": is_default,
                "sort_order": order,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
