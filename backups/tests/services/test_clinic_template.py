"""A new clinic is a copy of a migrated template schema (``backups.services.clinic_template``),
and exactly what running every migration makes: the same definitions (``pg_dump
--schema-only``, constraint names included), the same rows migrations write, the same
sequence positions. A template behind the code's migrations is rebuilt first, or, inside an
open transaction, the clinic is migrated as before.
"""

from __future__ import annotations

import io
import re
import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection

from backups.postgres import find_pg_tools, libpq_environment
from backups.services import clinic_template
from backups.services.clinic_template import TEMPLATE_SCHEMA
from clinics.models import Clinic

MADE: list[str] = []


def recording_maker(schema: str) -> bool:
    """The deployment's maker, noting each schema it made."""
    made = clinic_template.make_clinic_schema(schema)
    if made:
        MADE.append(schema)
    return made


def schema_only(schema: str) -> str:
    """``pg_dump --schema-only`` of ``schema`` with its name taken out (and pg_dump's comments)."""
    tools = find_pg_tools()
    out = subprocess.run(
        [tools.pg_dump, "--schema-only", f"--schema={schema}", "--no-owner", "--no-privileges"],
        env=libpq_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict"))]
    return re.sub(rf"\b{schema}\b", "S", "\n".join(lines))


def rows(schema: str) -> dict[str, list[tuple]]:
    """What the migrations write into a clinic's schema, and where its sequences stand."""
    found = {}
    with connection.cursor() as cursor:
        for table, order in [
            ("django_migrations", "app, name"),
            ("django_content_type", "id"),
            ("auth_permission", "id"),
        ]:
            columns = "app, name" if table == "django_migrations" else "*"
            cursor.execute(f'SELECT {columns} FROM "{schema}".{table} ORDER BY {order}')  # noqa: S608 - test names
            found[table] = cursor.fetchall()
        cursor.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s ORDER BY 1", [schema])
        found["sequences"] = cursor.fetchall()
    return found


@pytest.fixture
def made_clinics(live_db):
    """Clinics made by a test, dropped after it."""
    clinics: list[Clinic] = []
    yield clinics
    connection.set_schema_to_public()
    for clinic in clinics:
        clinic.delete(force_drop=True)


def new_clinic(schema: str, clinics: list[Clinic]) -> Clinic:
    clinic = Clinic(schema_name=schema, name=schema)
    clinic.save(verbosity=0)
    clinics.append(clinic)
    return clinic


def test_a_clinic_copied_from_the_template_is_what_the_migrations_make(made_clinics, settings):
    settings.CLINICS_SCHEMA_MAKER = ""  # django-tenants: every migration run
    new_clinic("tpl_migrated", made_clinics)
    settings.CLINICS_SCHEMA_MAKER = f"{__name__}.recording_maker"
    new_clinic("tpl_copied", made_clinics)
    assert MADE[-1] == "tpl_copied"  # made by the copy, not by migrations

    assert schema_only("tpl_copied") == schema_only("tpl_migrated")
    assert "_uniq UNIQUE" in schema_only("tpl_copied")  # Django's own constraint names, kept
    assert rows("tpl_copied") == rows("tpl_migrated")
    assert rows("tpl_copied")["auth_permission"]  # the rows are there, not two empty lists


def test_a_template_behind_the_migrations_is_rebuilt_before_it_is_copied(made_clinics, settings):
    settings.CLINICS_SCHEMA_MAKER = f"{__name__}.recording_maker"
    new_clinic("tpl_first", made_clinics)  # the template exists and is current
    with connection.cursor() as cursor:  # a release: the code has a migration the template lacks
        cursor.execute(f"DELETE FROM {TEMPLATE_SCHEMA}.django_migrations WHERE app = 'dental'")  # noqa: S608
        cursor.execute(f"DROP TABLE {TEMPLATE_SCHEMA}.dental_patient CASCADE")  # noqa: S608
    assert not clinic_template.template_is_current()

    new_clinic("tpl_after_release", made_clinics)
    assert MADE[-1] == "tpl_after_release" and clinic_template.template_is_current()
    assert schema_only("tpl_after_release") == schema_only("tpl_first")  # not the half template


@pytest.mark.django_db
def test_inside_a_transaction_a_stale_template_is_left_alone_and_the_clinic_is_migrated(settings):
    settings.CLINICS_SCHEMA_MAKER = f"{__name__}.recording_maker"
    assert clinic_template.template_is_current()  # made, committed, with the session's demo clinics
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute(f"DELETE FROM {TEMPLATE_SCHEMA}.django_migrations WHERE app = 'dental'")  # noqa: S608
    made_before = list(MADE)
    Clinic(schema_name="tpl_in_transaction", name="In a transaction").save(verbosity=0)
    assert made_before == MADE  # declined: migrations made it
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM tpl_in_transaction.django_migrations WHERE app = 'dental'")
        assert cursor.fetchone()[0] >= 1
        cursor.execute(f"SELECT count(*) FROM {TEMPLATE_SCHEMA}.django_migrations WHERE app = 'dental'")  # noqa: S608
        assert cursor.fetchone()[0] == 0  # the template was not rebuilt inside the transaction


@pytest.mark.django_db
def test_no_clinic_can_take_the_templates_name():
    clinic = Clinic(schema_name=TEMPLATE_SCHEMA, name="Sneaky")
    with pytest.raises(ValidationError, match="reserved for the template new clinics are made from"):
        clinic.full_clean()
    with pytest.raises(ValidationError, match="reserved"):
        clinic.save(verbosity=0)
    assert not Clinic.objects.filter(schema_name=TEMPLATE_SCHEMA).exists()
    assert clinic_template.template_is_current()  # and the template is untouched


def test_a_release_rebuilds_a_template_behind_the_migrations(live_db):
    with connection.cursor() as cursor:  # the code has a migration the template lacks
        cursor.execute(f"DELETE FROM {TEMPLATE_SCHEMA}.django_migrations WHERE app = 'dental'")  # noqa: S608
    out = io.StringIO()
    call_command("refresh_clinic_template", stdout=out)
    assert out.getvalue() == f"Clinic template {TEMPLATE_SCHEMA}: rebuilt from the migrations.\n"
    assert clinic_template.template_is_current()
    out = io.StringIO()
    call_command("refresh_clinic_template", stdout=out)
    assert out.getvalue() == f"Clinic template {TEMPLATE_SCHEMA}: was current.\n"


def test_a_template_holding_what_a_copy_cannot_carry_is_not_copied(made_clinics, settings):
    settings.CLINICS_SCHEMA_MAKER = f"{__name__}.recording_maker"
    assert clinic_template.ensure_template()
    with connection.cursor() as cursor:  # a later migration's materialized view, say
        cursor.execute(f"CREATE MATERIALIZED VIEW {TEMPLATE_SCHEMA}.busy_days AS SELECT 1 AS n")  # noqa: S608
    try:
        made_before = list(MADE)
        new_clinic("tpl_not_copied", made_clinics)
        assert made_before == MADE  # declined: the migrations made it
        assert rows("tpl_not_copied")["auth_permission"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP MATERIALIZED VIEW {TEMPLATE_SCHEMA}.busy_days")  # noqa: S608
