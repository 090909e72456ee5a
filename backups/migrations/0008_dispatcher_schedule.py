"""ONE django-q2 schedule runs the dispatcher every minute, for any number of clinics.

Created by name with get_or_create: running this twice (or on every tenant) never makes a
second row. ``catch_up`` is off in Q_CLUSTER, so a cluster that was down does not fire the
missed minutes at once (the dispatcher makes up a missed day by itself).
"""

from django.db import migrations

DISPATCHER = "backups.tasks.dispatch"
NAME = "Respaldo dispatcher"


def add_dispatcher(apps, schema_editor):
    from django_tenants.utils import get_public_schema_name

    if getattr(schema_editor.connection, "schema_name", get_public_schema_name()) != get_public_schema_name():
        return
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=NAME,
        defaults={"func": DISPATCHER, "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_dispatcher(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0007_operations"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_dispatcher, remove_dispatcher)]
