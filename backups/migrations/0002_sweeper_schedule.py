from django.db import migrations

SWEEPER = "backups.tasks.sweep_stale_jobs"


def add_sweeper(apps, schema_editor):
    from django_tenants.utils import get_public_schema_name

    if schema_editor.connection.schema_name != get_public_schema_name():
        return
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        func=SWEEPER,
        defaults={"name": "Fail backups whose worker died", "schedule_type": "I", "minutes": 2, "repeats": -1},
    )


def remove_sweeper(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(func=SWEEPER).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(add_sweeper, remove_sweeper)]
