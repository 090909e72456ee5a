"""New clinics made from a migrated template schema instead of by running every migration (issue 28).

django-tenants makes a new clinic's schema by running each tenant migration in it (≈ 1.5 s
here, more with every release). This makes it a copy of ``clinic_template``, a schema migrated
once per release: the template's definitions and rows (``django_migrations``, content types,
permissions) are read by the pg payload's own dump (``formats.pg.sqldump``: the server's
``pg_get_*def`` functions, every name and constraint name as migrations made them) in an
exported snapshot, and run into the new schema by the restore's script runner
(``restore_into_pg``), with its isolation and row-count checks: ≈ 0.35 s, and exactly what
migrations make (``test_clinic_template`` compares both with ``pg_dump --schema-only``). A
template holding a kind of object the pg payload does not carry (``catalog.unsupported``: a
materialized view, a type...) is not copied: the clinic is migrated, and a warning says why.

django-tenants' own way (``TENANT_BASE_SCHEMA``) was measured and not taken: its
``clone_schema`` SQL function renames Django's unique constraints (``…_0cd325b0_uniq`` becomes
``…_key``) and writes identity columns' bounds out, so a later migration that drops a constraint
by its name would fail on a cloned clinic, and it fakes every migration the template lacks.

The template is rebuilt (dropped, then migrated) when it is missing or behind the code's
migrations: by a release (``manage.py refresh_clinic_template``, the Procfile's release step
and ``make demo``), or by the first clinic made after it outside a transaction (under an
advisory lock). Inside an open transaction (the console's, a test's, a clone's) a template that
needs rebuilding is not rebuilt, since the copy reads it from another connection: the clinic is
then migrated as before.
"""

from __future__ import annotations

import logging

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from psycopg import sql

from backups.exceptions import RestoreRefused
from backups.formats.base import RestoreIntoError
from backups.formats.pg.catalog import unsupported
from backups.formats.pg.into import restore_into_pg
from backups.formats.pg.script import ScriptError
from backups.formats.pg.sqldump import sql_dump_stream
from backups.jobs.locks import CLINIC_JOBS, advisory_lock
from backups.postgres import DumpError, applied_migrations, find_pg_tools, schema_exists, schema_snapshot
from backups.services.verification import check_migrations

logger = logging.getLogger(__name__)

TEMPLATE_SCHEMA = settings.CLINICS_TEMPLATE_SCHEMA  # "clinic_template": a name no clinic may take
_TEMPLATE_LOCK_KEY = 0  # in CLINIC_JOBS: clinic ids start at 1


def _behind(applied: dict[str, list[str]]) -> bool | None:
    """Whether a schema whose ``django_migrations`` holds ``applied`` lacks a migration of the
    code's clinic apps (``verification.check_migrations``, the restore's own rule); None when it
    holds one the code does not know (made by a newer release: left alone)."""
    try:
        return check_migrations(applied)
    except RestoreRefused:
        return None


def _template_behind() -> bool | None:
    """``_behind`` for ``clinic_template``; True when it is missing or half-made."""
    if not schema_exists(TEMPLATE_SCHEMA):
        return True
    connection.ensure_connection()
    try:
        return _behind(applied_migrations(connection.connection, TEMPLATE_SCHEMA))
    except psycopg.Error:  # no django_migrations table: a template left half-made
        return True


def template_is_current() -> bool:
    """Whether ``clinic_template`` exists and holds every migration of the code's clinic apps."""
    return _template_behind() is False


def rebuild_template() -> None:
    """Drop ``clinic_template`` and make it again by running every tenant migration in it (committed)."""
    with connection.cursor() as cursor:
        name = sql.Identifier(TEMPLATE_SCHEMA).as_string(cursor.connection)
        cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        cursor.execute(f"CREATE SCHEMA {name}")
    call_command("migrate_schemas", tenant=True, schema_name=TEMPLATE_SCHEMA, interactive=False, verbosity=0)
    connection.set_schema_to_public()
    logger.info("Clinic template %s rebuilt from the migrations", TEMPLATE_SCHEMA)


def ensure_template() -> bool:
    """Rebuild ``clinic_template`` if it is missing or behind (one process at a time); whether it is current.

    Not inside an open transaction: the copy reads the template from another connection, which
    would not see it. A template a newer release made is not rebuilt by this older code."""
    behind = _template_behind()
    if behind is not True:
        return behind is False
    if connection.in_atomic_block:
        return False
    with advisory_lock(CLINIC_JOBS, _TEMPLATE_LOCK_KEY, wait_seconds=120) as held:
        if held and _template_behind() is True:
            rebuild_template()
    return template_is_current()


def make_clinic_schema(schema: str) -> bool:
    """Make the new schema ``schema`` a copy of the migrated template, on Django's connection (in
    its transaction, if one is open); False, having made nothing, when the template cannot be
    used (then the caller runs the migrations). Named by ``CLINICS_SCHEMA_MAKER``."""
    if not ensure_template():
        return False
    try:
        with schema_snapshot(TEMPLATE_SCHEMA) as snap:
            if _behind(snap.migrations) is not False:  # rebuilt meanwhile by another process, not yet committed
                return False
            with snap.conn.cursor() as cursor:
                not_carried = unsupported(cursor, TEMPLATE_SCHEMA)
            if not_carried:  # a kind the copy would leave out: migrations make it whole
                logger.warning("The clinic template holds what a copy does not carry (%s): %s is migrated",
                               "; ".join(not_carried), schema)  # fmt: skip
                return False
            with sql_dump_stream(TEMPLATE_SCHEMA, snapshot_id=snap.snapshot_id) as script, transaction.atomic():
                connection.ensure_connection()
                with psycopg.Cursor(connection.connection) as cursor:
                    restore_into_pg(
                        script,
                        source_schema=TEMPLATE_SCHEMA,
                        schema=schema,
                        expected_counts=snap.table_counts,
                        tools=find_pg_tools(),
                        cursor=cursor,
                        plain=True,
                        app_name="respaldo-new-clinic",
                    )
    except (DumpError, RestoreIntoError, ScriptError, psycopg.Error):
        # rolled back (its own transaction, or its savepoint in the caller's): the migrations make it
        logger.exception("Clinic %s could not be copied from the template; its migrations will be run", schema)
        return False
    finally:
        connection.set_schema_to_public()
    return True
