"""Checkpoint.seq: the save order the store assigns (ids follow writers' wall clocks)."""

from django.db import migrations, models


def number_existing_rows(apps, schema_editor):
    # Existing rows keep the order they had: by id.
    checkpoint = apps.get_model("checkpoints", "Checkpoint")
    rows = checkpoint.objects.order_by("checkpoint_id").only("checkpoint_id")
    for seq, row in enumerate(rows.iterator(), start=1):
        checkpoint.objects.filter(pk=row.pk).update(seq=seq)


class Migration(migrations.Migration):
    dependencies = [
        ("checkpoints", "0002_checkpoint_fork_lineage_timeline_index_and_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="checkpoint",
            name="seq",
            field=models.BigIntegerField(
                editable=False,
                help_text="assigned when the row is first added: the newest has the highest",
                null=True,
                unique=True,
                verbose_name="save order",
            ),
        ),
        migrations.RunPython(number_existing_rows, migrations.RunPython.noop),
    ]
