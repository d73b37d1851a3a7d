from django.db import migrations, models

# Draft mode (--draft, V7) renders at about half the GPU cost of a standard job, so it is priced
# at half an imagine: FAST, RELAX, TURBO. Operator-editable like every price row.
DRAFT_PRICES = {"IMAGINE_DRAFT": (7000, 3500, 14000)}


def seed(apps, schema_editor):
    Price = apps.get_model("billing", "Price")
    for action, tokens in DRAFT_PRICES.items():
        for mode, amount in zip(("FAST", "RELAX", "TURBO"), tokens, strict=True):
            Price.objects.get_or_create(action=action, mode=mode, defaults={"tokens": amount})


def unseed(apps, schema_editor):
    apps.get_model("billing", "Price").objects.filter(action__in=list(DRAFT_PRICES)).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_video_prices")]

    operations = [
        migrations.AlterField(
            model_name="price",
            name="action",
            field=models.CharField(
                choices=[
                    ("IMAGINE", "Imagine"),
                    ("UPSCALE", "Upscale"),
                    ("VARIATION", "Variation"),
                    ("REROLL", "Reroll"),
                    ("ZOOM", "Zoom"),
                    ("PAN", "Pan"),
                    ("DESCRIBE", "Describe"),
                    ("BLEND", "Blend"),
                    ("SHORTEN", "Shorten"),
                    ("SWAP_FACE", "Swap face"),
                    ("VIDEO", "Video"),
                    ("IMAGINE_DRAFT", "Imagine (draft mode)"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(seed, unseed),
    ]
