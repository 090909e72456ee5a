"""A release at many clinics (issue 28): ``migrate_schemas --tenant`` over N clinic schemas with
django-tenants' standard and multiprocessing executors, with nothing to apply and with one app's
migrations to apply; and one new clinic made by its migrations and copied from the template.

    .venv/bin/python bench/release.py --clinics 200

Makes ``relbench_NNNN`` copies of one clinic in SQL (``backups.tests.clinic_copies``, with its
``django_migrations`` rows) and drops them at the end. Refuses to run while the database holds
catalog-only clinics (the pages group's ``budget_*`` rows, kept with ``--keep``): migrate_schemas
would try to migrate their missing schemas.
"""

# ruff: noqa: S608 - SQL made from the bench's own schema names

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from django.db import connection
from django.test.utils import override_settings
from startup import ROOT  # Django set up, as every bench script

from backups.tests.clinic_copies import drop_copies, make_copies
from clinics.models import Clinic

PREFIX = "relbench_"


def migrate(*args: str) -> float:
    """Seconds of ``manage.py migrate_schemas --tenant`` in a fresh process."""
    start = time.perf_counter()
    command = [sys.executable, "manage.py", "migrate_schemas", "--tenant", "-v", "0", *args]
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def new_clinic(schema: str, maker: str | None) -> float:
    """Seconds to create one clinic (``maker``: the settings' ``CLINICS_SCHEMA_MAKER``, "" = migrations)."""
    with override_settings(**({} if maker is None else {"CLINICS_SCHEMA_MAKER": maker})):
        start = time.perf_counter()
        clinic = Clinic(schema_name=schema, name=schema)
        clinic.save(verbosity=0)
        seconds = time.perf_counter() - start
    clinic.delete(force_drop=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clinics", type=int, default=200)
    count = parser.parse_args().clinics
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM clinics_clinic c WHERE c.schema_name <> 'public' AND c.offboarded_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = c.schema_name)"
        )
        if cursor.fetchone()[0]:
            sys.exit("clinics without a schema in the database (bench --keep?): drop them first")
    template = f"{PREFIX}template"
    names = [f"{PREFIX}{n:04d}" for n in range(count)]
    drop_copies([n for n in [template, *names] if Clinic.objects.filter(schema_name=n).exists()])
    Clinic(schema_name=template, name="Release bench").save(verbosity=0)
    try:
        new_clinic(f"{PREFIX}warm", None)  # the template schema made or checked once
        rows = {
            "new clinic: by its migrations": new_clinic(f"{PREFIX}migrated", ""),
            "new clinic: copied from the template": new_clinic(f"{PREFIX}copied", None),
        }
        make_copies(template, names)
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(
                    f'INSERT INTO "{name}".django_migrations (app, name, applied) '
                    f'SELECT app, name, applied FROM "{template}".django_migrations'
                )
        clinics = Clinic.objects.exclude(schema_name="public").count()
        for label, args in [("standard", []), ("multiprocessing", ["--executor=multiprocessing"])]:
            rows[f"migrate_schemas {label}, nothing to apply, {clinics} clinics"] = migrate(*args)
            with connection.cursor() as cursor:  # one app's migrations to apply again, in every copy
                for name in names:
                    cursor.execute(f'DROP TABLE "{name}".django_session')
                    cursor.execute(f"DELETE FROM \"{name}\".django_migrations WHERE app = 'sessions'")
            rows[f"migrate_schemas {label}, sessions' migrations in {count} clinics"] = migrate(*args)
    finally:
        drop_copies([n for n in [template, *names] if Clinic.objects.filter(schema_name=n).exists()])
    print(f"| step ({count} copies, {connection.vendor}) | s |\n|---|---:|")
    for label, seconds in rows.items():
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
