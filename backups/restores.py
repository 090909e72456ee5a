"""Restore services: replace one clinic's data with one of its backups, atomically.

The order of a restore is: verify the source (checksum against the catalog, this
deployment's authentication, the manifest names this clinic, a known format, migrations
the code knows), take a safety backup, then replace the data in ONE transaction and only
commit once every table's row count matches the manifest. Whatever fails, at whatever
point, leaves the clinic exactly as it was; the outcome column is written inside that same
transaction, so after a crash the catalog still says truthfully whether the data changed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from typing import IO

from django.apps import apps as django_apps
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import schema_context
from psycopg import sql

from backups import archive, dumps, jobs, services, storage
from backups.json_payload import JsonPayloadError, load_json_payload
from backups.keys import archive_identities
from backups.models import ACTIVE_STATUSES, Backup, JobStatus, Restore
from backups.pg_binaries import PgTools, PgToolsError, find_pg_tools
from clinics.models import Clinic

logger = logging.getLogger(__name__)

OLD_SCHEMA_SUFFIX = "__before_restore"
KNOWN_FORMATS = {Backup.Format.PG, Backup.Format.JSON}


class RestoreError(services.BackupError):
    """A restore cannot be requested or was refused; the message is for the person who asked."""


EXPECTED_ERRORS = (*services.EXPECTED_ERRORS, RestoreError, JsonPayloadError, PgToolsError)


# --- Requesting ------------------------------------------------------------------------


def restore_request(
    *, clinic: Clinic | int | str, backup_id: int, requested_by: str = "", enqueue: bool = True
) -> Restore:
    """Create a pending restore of ``clinic`` from its backup ``backup_id``.

    Refuses (RestoreError) a backup of another clinic, one that did not succeed or has
    expired, and a clinic that already has a backup or restore waiting or running.
    """
    target = services.clinic_get(clinic)
    backup = Backup.objects.select_related("clinic").filter(pk=backup_id).first()
    if backup is None:
        raise RestoreError(f"There is no backup #{backup_id}.")
    if backup.clinic_id != target.pk:
        raise RestoreError(
            f"Backup #{backup.pk} belongs to another clinic; a clinic can only be restored from its own backups."
        )
    if backup.status != JobStatus.SUCCEEDED or not backup.storage_name:
        raise RestoreError(f"Backup #{backup.pk} is {backup.get_status_display().lower()}: it cannot be restored.")
    with transaction.atomic():
        Clinic.objects.select_for_update().get(pk=target.pk)
        busy_backup = services.active_job(target.pk)
        busy_restore = Restore.objects.filter(clinic_id=target.pk, status__in=ACTIVE_STATUSES).first()
        if busy_backup or busy_restore:
            what = f"backup #{busy_backup.pk}" if busy_backup else f"restore #{busy_restore.pk}"
            raise RestoreError(f"Clinic {target.schema_name} already has {what} waiting or running; try again later.")
        restore = Restore.objects.create(clinic=target, backup=backup, requested_by=requested_by)
        if enqueue:
            transaction.on_commit(lambda: _enqueue_restore(restore.pk))
    return restore


def _enqueue_restore(restore_id: int) -> None:
    from django_q.tasks import async_task

    async_task("backups.tasks.run_restore", restore_id, task_name=f"restore-{restore_id}", group="restores")


def restore_in_progress(clinic_id: int) -> Restore | None:
    """The clinic's running restore, if any (its pages answer 'restore in progress')."""
    return Restore.objects.filter(clinic_id=clinic_id, status=JobStatus.RUNNING).first()


# --- Running ---------------------------------------------------------------------------


def _update(restore_id: int, **changes) -> None:
    """Record progress on a restore (phase, safety backup, outcome) whatever its state."""
    Restore.objects.filter(pk=restore_id).update(**changes)


def _fail(restore_id: int, reason: str) -> None:
    jobs.fail(Restore, restore_id, reason)


def restore_run(*, restore_id: int) -> Restore:
    """Run a pending restore to the end and return its final row. Never runs one twice.

    A restore found already running lost its worker: it is settled by
    ``restore_recover_crashed`` from what its transaction left, and never run again.
    """
    restore = Restore.objects.select_related("clinic", "backup").get(pk=restore_id)
    if restore.status == JobStatus.RUNNING:
        if not jobs.clinic_lock_is_held(restore.clinic_id):
            restore_recover_crashed(restore)
        return Restore.objects.get(pk=restore_id)
    if restore.status != JobStatus.PENDING:
        return restore
    try:
        with jobs.clinic_job_lock(restore.clinic_id):
            if not jobs.claim(Restore, restore_id, phase="verifying"):
                return Restore.objects.get(pk=restore_id)
            try:
                _execute(restore)
            except EXPECTED_ERRORS as exc:
                _settle_failure(restore_id, str(exc))
            except Exception as exc:
                logger.exception("Restore #%s failed unexpectedly", restore_id)
                _settle_failure(restore_id, f"Unexpected error: {type(exc).__name__}: {exc}")
    except jobs.ClinicBusy as exc:
        _fail(restore_id, str(exc))
    return Restore.objects.get(pk=restore_id)


def _settle_failure(restore_id: int, reason: str) -> None:
    outcome = Restore.objects.get(pk=restore_id).outcome
    if outcome == Restore.Outcome.RESTORED:
        reason = f"{reason} The backup's data WAS restored; its safety backup is the way back."
    else:
        reason = f"{reason} The clinic is unchanged."
        _update(restore_id, outcome=Restore.Outcome.UNCHANGED)
    _fail(restore_id, reason)


def restore_recover_crashed(restore: Restore) -> None:
    """Settle a restore whose worker died, from what its transaction committed (or not)."""
    restore.refresh_from_db()
    if restore.outcome == Restore.Outcome.RESTORED:
        try:
            _migrate_forward(restore)
        except Exception as exc:  # reported on the row; the data is restored either way
            _fail(restore.pk, f"The worker stopped after the data was restored, and migrating it failed: {exc}")
            return
        jobs.succeed(
            Restore, restore.pk, error="The worker stopped after the data was restored; recovery completed it."
        )
        return
    _update(restore.pk, outcome=Restore.Outcome.UNCHANGED)
    _fail(
        restore.pk,
        "Interrupted: the worker running this restore stopped (crash, kill or time-out) before the restore "
        "committed. The clinic is unchanged.",
    )


def restore_sweep_stale() -> list[Restore]:
    """Settle running restores whose worker is gone; returns them."""
    settled = []
    for restore in Restore.objects.filter(status=JobStatus.RUNNING):
        if not jobs.clinic_lock_is_held(restore.clinic_id):
            restore_recover_crashed(restore)
            settled.append(restore)
    return settled


# --- Verification ----------------------------------------------------------------------


def tenant_app_labels() -> set[str]:
    """Labels of the apps whose tables live in a clinic's schema."""
    return {django_apps.get_app_config(name.rsplit(".", 1)[-1]).label for name in settings.TENANT_APPS}


def code_migrations() -> set[tuple[str, str]]:
    """Every migration the code knows for the clinic's apps, as (app, name)."""
    labels = tenant_app_labels()
    return {node for node in MigrationLoader(None, ignore_no_migrations=True).graph.nodes if node[0] in labels}


def check_migrations(manifest_migrations: dict[str, list[str]]) -> bool:
    """Refuse a backup from a newer release; return True when it must be migrated forward.

    Only the clinic's own apps count: shared apps' tables are not in a clinic's schema.
    """
    known = code_migrations()
    labels = tenant_app_labels()
    applied = {(app, name) for app, names in manifest_migrations.items() for name in names if app in labels}
    unknown = sorted(applied - known)
    if unknown:
        shown = ", ".join(f"{app}.{name}" for app, name in unknown[:5])
        raise RestoreError(
            f"This backup was made by a newer release of the application (it has migrations this one does not know: "
            f"{shown}). Upgrade before restoring it."
        )
    return bool(known - applied)


def verify_backup(backup: Backup, clinic: Clinic) -> dict:
    """Check a stored backup end to end before anything is touched; return its manifest."""
    max_payload = int(getattr(settings, "BACKUPS_MAX_PAYLOAD_BYTES", 20 * 1024**3))
    with storage.open_stored(backup.storage_name) as stream:
        summary = archive.verify_archive(stream, identities=archive_identities(), max_payload_bytes=max_payload)
    if summary.archive_sha256 != backup.sha256:
        raise RestoreError(
            f"Backup #{backup.pk} changed in storage since it was made (its SHA-256 no longer matches the catalog)."
        )
    manifest = summary.manifest
    if manifest.get("format_version") != services.MANIFEST_FORMAT_VERSION:
        raise RestoreError(f"Backup #{backup.pk} has an unknown format version {manifest.get('format_version')!r}.")
    owner = manifest.get("clinic") or {}
    if owner.get("schema") != clinic.schema_name or owner.get("id") != clinic.pk:
        raise RestoreError(
            f"Backup #{backup.pk} holds the data of another clinic ({owner.get('schema')}); "
            "a clinic can only be restored from its own backups."
        )
    if manifest.get("payload_format") not in KNOWN_FORMATS:
        raise RestoreError(f"Backup #{backup.pk} has an unknown payload format {manifest.get('payload_format')!r}.")
    return manifest


# --- The restore itself ----------------------------------------------------------------


def _execute(restore: Restore) -> None:
    clinic, backup = restore.clinic, restore.backup
    manifest = verify_backup(backup, clinic)
    needs_migrate = check_migrations(manifest.get("migrations") or {})
    tools = find_pg_tools() if manifest["payload_format"] == Backup.Format.PG else None
    if tools is not None and not dumps.schema_exists(clinic.schema_name):
        raise RestoreError(f"The clinic's schema {clinic.schema_name!r} does not exist in the database.")

    _update(restore.pk, progress_phase="safety backup")
    safety = services.backup_request(
        clinic=clinic.pk, kind=Backup.Kind.PRE_RESTORE, requested_by=restore.requested_by, enqueue=False
    )
    _update(restore.pk, safety_backup=safety)
    safety = services.backup_run(backup_id=safety.pk)
    if safety.status != JobStatus.SUCCEEDED:
        raise RestoreError(f"The safety backup #{safety.pk} failed, so nothing was restored: {safety.error}")

    _update(restore.pk, progress_phase="restoring")
    max_payload = int(getattr(settings, "BACKUPS_MAX_PAYLOAD_BYTES", 20 * 1024**3))
    with (
        storage.open_stored(backup.storage_name) as stream,
        archive.open_archive(stream, identities=archive_identities(), max_payload_bytes=max_payload) as payload,
    ):
        if tools is not None:
            _restore_pg(restore, clinic.schema_name, payload, manifest["tables"], tools)
        else:
            _restore_json(restore, clinic.schema_name, payload, manifest["tables"])

    if needs_migrate:
        _update(restore.pk, progress_phase="migrating")
        _migrate_forward(restore)
    jobs.succeed(Restore, restore.pk)


def _migrate_forward(restore: Restore) -> None:
    call_command("migrate_schemas", schema_name=restore.clinic.schema_name, interactive=False, verbosity=0)
    _update(restore.pk, migrated=True)


def _restore_json(restore: Restore, schema: str, payload: IO[bytes], tables: dict[str, int]) -> None:
    with schema_context(schema), transaction.atomic():
        load_json_payload(payload, expected_counts=tables)
        Restore.objects.filter(pk=restore.pk).update(outcome=Restore.Outcome.RESTORED)


def _lock_timeout_ms() -> int:
    return int(getattr(settings, "BACKUPS_RESTORE_LOCK_TIMEOUT_MS", 10_000))


def _prologue(schema: str) -> str:
    old = schema + OLD_SCHEMA_SUFFIX
    lock_timeout = _lock_timeout_ms()
    return "\n".join(
        [
            "BEGIN;",
            f"SET LOCAL lock_timeout = '{lock_timeout}ms';",
            "SET client_connection_check_interval = '1s';",
            f"DROP SCHEMA IF EXISTS {_ident(old)} CASCADE;",
            f"ALTER SCHEMA {_ident(schema)} RENAME TO {_ident(old)};",
            "",
        ]
    )


def _epilogue(schema: str, tables: dict[str, int], restore_id: int) -> str:  # noqa: S608
    # Names are quoted by psycopg (_ident/_literal) and numbers forced through int().
    checks = [
        "DO $respaldo$",
        "DECLARE n bigint;",
        "BEGIN",
        "  SELECT count(*) INTO n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "  # noqa: S608
        f"WHERE s.nspname = {_literal(schema)} AND c.relkind IN ('r', 'p');",
        f"  IF n <> {len(tables)} THEN RAISE EXCEPTION 'The restored data has % tables but the backup lists "
        f"{len(tables)}.', n; END IF;",
    ]
    for table, count in sorted(tables.items()):
        checks += [
            f"  SELECT count(*) INTO n FROM {_ident(schema)}.{_ident(table)};",  # noqa: S608
            f"  IF n <> {int(count)} THEN RAISE EXCEPTION 'Table {table} has % rows after the restore but the "
            f"backup says {int(count)}.', n; END IF;",
        ]
    checks += ["END", "$respaldo$;"]
    return "\n".join(
        [
            "",
            *checks,
            f"UPDATE public.backups_restore SET outcome = 'restored' WHERE id = {int(restore_id)};",  # noqa: S608
            f"SET LOCAL lock_timeout = '{_lock_timeout_ms()}ms';",  # pg_restore's script resets it to 0
            f"DROP SCHEMA {_ident(schema + OLD_SCHEMA_SUFFIX)} CASCADE;",
            "COMMIT;",
            "",
        ]
    )


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _literal(value: str) -> str:
    return sql.Literal(value).as_string(None)


def _restore_pg(restore: Restore, schema: str, payload: IO[bytes], tables: dict[str, int], tools: PgTools) -> None:
    """Feed ``pg_restore -f -`` into one psql transaction, committing only when all checks pass.

    psql gets our BEGIN and schema swap, then pg_restore's script, then the row-count
    checks, the outcome, the drop of the old schema and COMMIT. Any failure kills psql
    before COMMIT is written, which rolls the whole transaction back.
    """
    env = dumps.libpq_environment() | {"PGAPPNAME": f"respaldo-restore-{restore.pk}"}
    with tempfile.TemporaryFile() as psql_err, tempfile.TemporaryFile() as restore_err:
        psql = dumps.spawn(
            [tools.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_err,
            env=env,
        )
        pg_restore = None
        try:
            psql.stdin.write(_prologue(schema).encode())
            psql.stdin.flush()
            pg_restore = dumps.spawn(
                [tools.pg_restore, "--no-owner", "--no-privileges", "-f", "-"],
                stdin=subprocess.PIPE,
                stdout=psql.stdin,
                stderr=restore_err,
                env=env,
            )
            with contextlib.suppress(BrokenPipeError):  # pg_restore or psql stopped: their exit says why
                shutil.copyfileobj(payload, pg_restore.stdin, 1 << 20)
            with contextlib.suppress(BrokenPipeError):
                pg_restore.stdin.close()
            if pg_restore.wait() != 0:
                raise RestoreError(_tool_failure("pg_restore", restore_err, psql_err))
            psql.stdin.write(_epilogue(schema, tables, restore.pk).encode())
            psql.stdin.close()
            if psql.wait() != 0:
                raise RestoreError(_tool_failure("psql", psql_err))
        except BaseException as exc:
            for proc in (pg_restore, psql):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if isinstance(exc, BrokenPipeError):
                raise RestoreError(_tool_failure("psql", psql_err)) from exc
            raise


def _tool_failure(tool: str, *stderr_files: IO[bytes]) -> str:
    messages = []
    for handle in stderr_files:
        handle.seek(0)
        text = handle.read().decode("utf-8", "replace").strip()
        if text:
            messages.append(text[-2000:])
    detail = " | ".join(messages) or "no message"
    return f"The restore was rolled back ({tool} stopped): {detail}."
