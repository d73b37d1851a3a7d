from django.db import migrations, models

# HD (720p) video: Midjourney's docs put an HD video job at about 3.2x the GPU time of an SD
# one, so its row is 3.2x VIDEO's (a batch of 4: 112000 FAST, 224000 TURBO). HD runs only in
# fast modes (Midjourney makes no HD video in Relax), so there is no RELAX row: such a task is
# refused before it is priced. Operator-editable like every price row.
HD_PRICES = {"FAST": 358400, "TURBO": 716800}


def seed(apps, schema_editor):
    Price = apps.get_model("billing", "Price")
    for mode, tokens in HD_PRICES.items():
        # get_or_create: an operator's own price is never overwritten.
        Price.objects.get_or_create(action="VIDEO_HD", mode=mode, defaults={"tokens": tokens})


def unseed(apps, schema_editor):
    apps.get_model("billing", "Price").objects.filter(action="VIDEO_HD").delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_price_edit_retexture")]

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
                    ("EDIT", "Edit"),
                    ("RETEXTURE", "Retexture"),
                    ("IMAGINE_DRAFT", "Imagine (draft mode)"),
                    ("VIDEO_HD", "Video (HD 720p)"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(seed, unseed),
    ]
