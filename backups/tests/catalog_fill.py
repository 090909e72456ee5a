"""A large synthetic catalog (catalog rows only, no schemas, no stored files) for the query-budget
test of the platform pages and for the pages benchmark (``bench/run.py``): one place, so that the
test and the benchmark measure the same rows."""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from backups.models import Backup, BackupPolicy, JobStatus
from clinics.models import Clinic

PREFIX = "budget_"


def fill_catalog(
    *, clinics: int = 1_000, backups_each: int = 100, size: int = 1 << 20, analyze: bool = True
) -> list[Clinic]:
    """``clinics`` catalog-only clinics ``budget_NNNN``, a policy each (one in three off), and
    ``backups_each`` backups each, one hour apart (one in ten failed, those past 60 expired).

    ``analyze``: ANALYZE the tables after (the planner then knows their size). Its row counts
    stay after a test's rollback (PostgreSQL writes them in place): a test of a few rows passes
    False, or the next tests' plans expect tiny tables over heaps full of rolled-back rows."""
    now = timezone.now()
    made = Clinic.objects.bulk_create(
        [Clinic(schema_name=f"{PREFIX}{n:04d}", name=f"Budget {n:04d}") for n in range(clinics)]
    )
    BackupPolicy.objects.bulk_create([BackupPolicy(clinic=c, enabled=bool(c.pk % 3)) for c in made])
    # every column's default, copied by the database into each generated row
    template = Backup.objects.create(
        clinic=made[0], status=JobStatus.SUCCEEDED, requested_at=now, started_at=now, succeeded_at=now, size=size
    )
    columns = [f.column for f in Backup._meta.concrete_fields if f.column != "id"]
    overrides = {
        "clinic_id": "c.id",
        "status": "CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'succeeded' END",
        "requested_at": "%(now)s - g * interval '1 hour'",
        "started_at": "%(now)s - g * interval '1 hour'",
        "succeeded_at": "CASE WHEN g %% 10 = 0 THEN NULL ELSE %(now)s - g * interval '1 hour' END",
        "failed_at": "CASE WHEN g %% 10 = 0 THEN %(now)s - g * interval '1 hour' END",
        "storage_name": "CASE WHEN g %% 10 = 0 THEN '' ELSE 'clinics/' || c.schema_name || '/' || g END",
        "size": "c.id * 1000 + g",
        "expired_at": "CASE WHEN g > 60 THEN %(now)s END",
    }
    quoted = ", ".join(f'"{column}"' for column in columns)
    select = ", ".join(overrides.get(column, f't."{column}"') for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO backups_backup ({quoted}) SELECT {select} FROM backups_backup t, clinics_clinic c, "  # noqa: S608 - our own column names
            "generate_series(1, %(each)s) g WHERE t.id = %(template)s AND c.schema_name LIKE 'budget\\_%%'",
            {"now": now, "template": template.pk, "each": backups_each},
        )
        template.delete()
        if analyze:
            cursor.execute("ANALYZE clinics_clinic, backups_backuppolicy, backups_backup, backups_restore")
    return made
