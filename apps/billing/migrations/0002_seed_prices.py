from django.db import migrations

# Tokens per successful task (SPEC §3): FAST, RELAX, TURBO. 35,000 tokens = 1 CNY.
PRICES = {
    "IMAGINE": (14000, 7000, 28000),
    "UPSCALE": (3500, 1750, 7000),
    "VARIATION": (14000, 7000, 28000),
    "REROLL": (14000, 7000, 28000),
    "ZOOM": (14000, 7000, 28000),
    "PAN": (14000, 7000, 28000),
    "DESCRIBE": (3500, 1750, 7000),
    "BLEND": (14000, 7000, 28000),
    "SHORTEN": (3500, 1750, 7000),
    "SWAP_FACE": (3500, 1750, 7000),
}


def seed(apps, schema_editor):
    Price = apps.get_model("billing", "Price")
    for action, tokens in PRICES.items():
        for mode, amount in zip(("FAST", "RELAX", "TURBO"), tokens, strict=True):
            Price.objects.get_or_create(action=action, mode=mode, defaults={"tokens": amount})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
