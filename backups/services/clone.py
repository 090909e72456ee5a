"""A NEW clinic made from a backup: a copy of a clinic for training, or an offboarded clinic
brought back under another schema name.

``clone_request`` checks the new schema name and domain (nothing is created when they are
refused) and records a ``CloneJob``; ``clone_run`` (a worker, or this process) restores the
backup into the new clinic. The source clinic is never changed nor locked: it may even be
gone (offboarded), only its backup is read.

How nothing is left behind. The stored archive is read ONCE and verified (``verified_copy``:
SHA-256 against the catalog, this deployment's authentication, the manifest naming the
backup's clinic); what is restored is that private copy. Then ONE transaction of Django's
connection creates the clinic's row (``auto_create_schema`` off: the schema comes from the
backup), its domain, its schema and data, migrates it forward when the backup is older than
the code, and records the clinic on the job row:

* pg: ``restore_into_pg`` fills the new schema from the source schema's dump (the schema name
  rewritten in pg_restore's script; its checks guarantee no lock on the source schema);
* json: the new schema is created by the tenant migrations (users, sessions... as a new
  clinic has them), then the payload is loaded in place, as a normal json restore does.

The archive's files are written meanwhile to ``MEDIA_ROOT/<new schema>__restoring`` and
renamed to ``MEDIA_ROOT/<new schema>`` only after the commit. Any failure before the commit
rolls the whole clinic back and removes the staged files; a failure after it (the rename)
removes the clinic again. A worker that dies mid-way is told apart from a long clone by a
session advisory lock on the job; ``clone_recover_crashed`` then finishes the rename (the
clinic committed) or removes the staged files (it did not).
"""

from __future__ import annotations

import logging
import re
import shutil
from typing import Any

from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from backups import archive, jobs, postgres
from backups.audit import audit
from backups.exceptions import RespaldoError, RestoreRefused, translated
from backups.formats import format_for
from backups.formats.scratch import check_read_to_the_end
from backups.jobs.locks import CLONE_JOBS, advisory_lock, advisory_lock_held
from backups.keys.clinic import reading_identities
from backups.manifest import manifest_has_media
from backups.media import MediaStaging, missing_files_note
from backups.models import ACTIVE_STATUSES, AuditEntry, Backup, CloneJob, JobStatus
from backups.services.recover import clinic_domain
from backups.services.verification import VerifiedCopy, check_migrations, verified_copy
from clinics.models import Clinic, Domain

logger = logging.getLogger(__name__)

# A clone's phases are the model's (``CloneJob.Phase``): restoring = the clinic's row, schema, data
# (and migrations) in one transaction; migrating = an older backup's schema migrated forward (still
# in that transaction); files = the staged files renamed into the clinic's folder.
PHASE_VERIFYING = CloneJob.Phase.VERIFYING
PHASE_RESTORING = CloneJob.Phase.RESTORING
PHASE_MIGRATING = CloneJob.Phase.MIGRATING
PHASE_FILES = CloneJob.Phase.FILES

# Room is left for the schemas a restore or a drill of the new clinic makes beside it
# (``<schema>__before_restore``, ``<schema>__drill_<backup id>``: PostgreSQL names stop at 63).
MAX_SCHEMA_LENGTH = 40
_SCHEMA_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def clone_identities(backup: Backup) -> list[str]:
    """The age identities that open ``backup``'s archive: its clinic's own key, then the deployment's."""
    return reading_identities(backup.clinic)


# --- Checking the new clinic's name and domain ---------------------------------------------


def default_domain(schema: str) -> str:
    """``<schema>.<platform domain>``, with ``-`` for ``_`` (Django refuses a Host with ``_``)."""
    return clinic_domain(schema)


def check_target(schema: str, domain: str | None = None, *, clone_id: int | None = None) -> str:
    """Refuse (RespaldoError) a new schema name or domain that is invalid or taken; return the domain.

    Taken means: a clinic (offboarded ones included) has the name, a schema of that name
    exists, another clone waiting or running is making it, or its media folder exists; a
    domain of any clinic or of another active clone. ``clone_id``: the clone checking itself.
    """
    problems = target_problems(schema, domain, clone_id=clone_id)
    if problems:
        raise next(iter(problems.values()))
    return (domain or default_domain(schema)).strip().lower()


def target_problems(schema: str, domain: str | None = None, *, clone_id: int | None = None) -> dict[str, RespaldoError]:
    """Everything wrong with a new schema name and domain at once, by form field ("schema_name",
    "domain"): empty when both can be used. A domain left empty is derived from the schema name,
    and only judged when that name is valid."""
    problems: dict[str, RespaldoError] = {}
    try:
        _check_schema_available(schema, clone_id)
    except RespaldoError as exc:
        problems["schema_name"] = exc
    if domain or not problems:
        try:
            _check_domain_available((domain or default_domain(schema)).strip().lower(), clone_id)
        except RespaldoError as exc:
            problems["domain"] = exc
    return problems


def _check_schema_available(schema: str, clone_id: int | None) -> None:
    _check_schema_name(schema)
    owner = Clinic.objects.filter(schema_name=schema).first()
    if owner is not None:
        raise RespaldoError("clone_schema_taken", "clone_schema_taken_clinic", schema=schema, clinic=owner.name)
    if postgres.schema_exists(schema):
        raise RespaldoError("clone_schema_taken", "clone_schema_taken_database", schema=schema)
    active = CloneJob.objects.filter(status__in=ACTIVE_STATUSES).exclude(pk=clone_id)
    other = active.filter(target_schema=schema).first()
    if other is not None:
        raise RespaldoError("clone_schema_taken", "clone_schema_taken_clone", schema=schema, clone=other.pk)
    files = _media_staging(schema)
    if files is not None and (files.root.exists() or files.staging.exists()):
        raise RespaldoError("clone_schema_taken", "clone_schema_taken_files", schema=schema)


def _check_domain_available(domain: str, clone_id: int | None) -> None:
    _check_domain_name(domain)
    holder = Domain.objects.select_related("tenant").filter(domain=domain).first()
    if holder is not None:
        raise RespaldoError("clone_domain_taken", domain=domain, clinic=holder.tenant.name)
    active = CloneJob.objects.filter(status__in=ACTIVE_STATUSES).exclude(pk=clone_id)
    other = active.filter(target_domain=domain).first()
    if other is not None:
        raise RespaldoError("clone_domain_taken", "clone_domain_taken_clone", domain=domain, clone=other.pk)


def _check_schema_name(schema: str) -> None:
    valid = (
        isinstance(schema, str)
        and len(schema) <= MAX_SCHEMA_LENGTH
        and _SCHEMA_NAME.fullmatch(schema) is not None
        and not schema.startswith("pg_")
        and schema not in (get_public_schema_name(), "information_schema")
    )
    if not valid:
        raise RespaldoError("clone_schema_invalid", schema=str(schema)[:80], max=MAX_SCHEMA_LENGTH)


def _check_domain_name(domain: str) -> None:
    labels = domain.split(".")
    if len(domain) > 253 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise RespaldoError("clone_domain_invalid", domain=domain[:100])


def _media_staging(schema: str) -> MediaStaging | None:
    """The new clinic's files folder and its staging folder (None unless media storage is local)."""
    try:
        return MediaStaging(schema)
    except NotImplementedError:
        return None


def _check_source(backup: Backup | None, backup_id: int) -> Backup:
    if backup is None:
        raise RestoreRefused("backup_not_found", backup=backup_id)
    if backup.expired_at is not None:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status="expired")
    if backup.status != JobStatus.SUCCEEDED or not backup.storage_name:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status=backup.status)
    return backup


# --- Requesting ----------------------------------------------------------------------------


@translated()
def clone_request(
    *,
    source_backup_id: int,
    schema_name: str,
    name: str,
    domain: str | None = None,
    requested_by: str,
    enqueue: bool = True,
) -> CloneJob:
    """Record a pending clone of backup ``source_backup_id`` into a new clinic ``schema_name``.

    Refused (RespaldoError, nothing created) for a backup that cannot be restored, and for a
    schema name or domain that is invalid or taken (``check_target``). ``name``: the new
    clinic's name (default: the source clinic's, with the schema name). ``enqueue``: hand it to
    a worker (task ``backups.tasks.clone``) once committed; otherwise call ``clone_run``.
    """
    clone_sweep_stale()  # a dead clone must not hold its schema name forever
    backup = _check_source(
        Backup.objects.select_related("clinic").filter(pk=source_backup_id).first(), source_backup_id
    )
    target_domain = check_target(schema_name, domain)
    try:
        with transaction.atomic():
            clone = CloneJob.objects.create(
                source_backup=backup,
                target_schema=schema_name,
                target_name=(name or f"{backup.clinic.name} ({schema_name})")[:200],
                target_domain=target_domain,
                requested_by=requested_by,
            )
            if enqueue:
                transaction.on_commit(lambda: _enqueue(clone.pk))
    except IntegrityError:  # another request for the same name or domain won the race
        check_target(schema_name, domain)
        raise
    logger.info("Clone #%s of backup #%s into %s requested by %s", clone.pk, backup.pk, schema_name, requested_by)
    return clone


def _enqueue(clone_id: int) -> None:
    from django_q.tasks import async_task

    async_task("backups.tasks.clone", clone_id, task_name=f"clone-{clone_id}", group="clones")


# --- Running -------------------------------------------------------------------------------


def clone_run(*, clone_id: int) -> CloneJob:
    """Run a pending clone to its end and return its final row. Never runs one twice.

    A clone found running whose worker is gone is settled by ``clone_recover_crashed``.
    """
    clone = CloneJob.objects.get(pk=clone_id)
    if clone.status == JobStatus.RUNNING and not advisory_lock_held(CLONE_JOBS, clone_id):
        clone_recover_crashed(clone)
    if clone.status != JobStatus.PENDING:
        return CloneJob.objects.get(pk=clone_id)

    def on_failure(reason: RespaldoError) -> None:
        try:
            _undo(CloneJob.objects.get(pk=clone_id))
        except Exception:  # the job still fails (and says why); what is left is in the log
            logger.exception("Clone #%s: could not remove the new clinic %s", clone_id, clone.target_schema)
        jobs.fail(
            CloneJob, clone_id, RespaldoError(reason.code, "clone_failed", schema=clone.target_schema, reason=reason)
        )

    def execute() -> None:
        try:
            _execute(CloneJob.objects.select_related("source_backup__clinic").get(pk=clone_id))
        finally:
            connection.set_schema_to_public()

    return jobs.run(
        CloneJob,
        clone_id,
        lock=advisory_lock(CLONE_JOBS, clone_id),
        phase=PHASE_VERIFYING,
        execute=execute,
        on_failure=on_failure,
        label="Clone",
        log=logger,
    )


def _phase(clone_id: int, phase: str) -> None:
    """Record the clone's phase where others can see it (inside the clone's transaction: on a
    connection of its own; the job row is written by that transaction only at its very end)."""
    if not connection.in_atomic_block:
        CloneJob.objects.filter(pk=clone_id).update(progress_phase=phase)
        return
    query = sql.SQL("UPDATE public.{} SET progress_phase = %s WHERE id = %s").format(
        sql.Identifier(CloneJob._meta.db_table)
    )
    with postgres.connect_separately(autocommit=True) as conn:
        conn.execute(query, [phase, clone_id])


def _execute(clone: CloneJob) -> None:
    backup = clone.source_backup
    check_target(clone.target_schema, clone.target_domain, clone_id=clone.pk)  # still free?
    with verified_copy(backup, backup.clinic) as (manifest, verified):
        needs_migrate = check_migrations(manifest.get("migrations") or {})
        tools = format_for(manifest["payload_format"]).tools_for(manifest)
        files = _media_staging(clone.target_schema) if manifest_has_media(manifest) else None
        if manifest_has_media(manifest) and files is None:
            raise RespaldoError("clone_media_storage")
        _phase(clone.pk, PHASE_RESTORING)
        if files is not None:
            files.prepare()
        try:
            _create_in_one_transaction(clone, manifest, verified, tools, files, needs_migrate=needs_migrate)
        except BaseException:
            if files is not None:
                files.discard()
            raise
    if files is not None:
        _phase(clone.pk, PHASE_FILES)
        files.switch()
    jobs.succeed(CloneJob, clone.pk, note=_media_note(manifest, clone.target_schema))
    _audit_clone(CloneJob.objects.get(pk=clone.pk), backup)
    logger.info("Clone #%s: clinic %s created from backup #%s", clone.pk, clone.target_schema, backup.pk)


def _audit_clone(clone: CloneJob, backup: Backup) -> None:
    """One entry in each clinic's trail: the source's says its data was copied, and where to."""
    common = {"actor": clone.requested_by, "backup_id": backup.pk, "clone": clone.pk}
    audit(AuditEntry.Action.CLONED, clinic_id=backup.clinic_id, to_schema=clone.target_schema, **common)
    audit(AuditEntry.Action.CLONED, clinic_id=clone.clinic_id, from_schema=backup.clinic.schema_name, **common)


def _create_in_one_transaction(
    clone: CloneJob,
    manifest: dict,
    verified: VerifiedCopy,
    tools: Any,
    files: MediaStaging | None,
    *,
    needs_migrate: bool,
) -> None:
    """The clinic's row, domain, schema and data (and migrations), and the job's ``clinic``: all or nothing."""
    backup = clone.source_backup
    with transaction.atomic():
        clinic = _create_clinic(clone)
        with verified.open(clone_identities(backup), media_sink=files.sink if files is not None else None) as payload:
            _fill(clone, clinic, payload, manifest, tools, needs_migrate=needs_migrate)
        CloneJob.objects.filter(pk=clone.pk).update(clinic=clinic, migrated=needs_migrate)


def _create_clinic(clone: CloneJob) -> Clinic:
    """The new clinic's row (no schema: it comes from the backup) and its primary domain."""
    source = clone.source_backup.clinic
    clinic = Clinic(
        schema_name=clone.target_schema,
        name=clone.target_name,
        contact_email=source.contact_email,
        time_zone=source.time_zone,
        language=source.language,
        backup_recipient=source.backup_recipient,
    )
    clinic.auto_create_schema = False  # the instance's own: no CREATE SCHEMA, no migrations
    clinic.save(verbosity=0)
    Domain.objects.create(domain=clone.target_domain, tenant=clinic, is_primary=True)
    return clinic


def _fill(
    clone: CloneJob,
    clinic: Clinic,
    payload: archive.ArchiveReader,
    manifest: dict,
    tools: Any,
    *,
    needs_migrate: bool,
) -> None:
    """The new clinic's schema and data, from the payload, in the clone's transaction on Django's connection;
    migrated forward when the payload carries a schema older than the code."""
    backup = clone.source_backup
    payload_format = format_for(manifest["payload_format"])
    payload_format.into_new_clinic(
        payload,
        manifest,
        source_schema=backup.clinic.schema_name,
        schema=clinic.schema_name,
        tools=tools,
        app_name=f"respaldo-clone-{clone.pk}",
        create_schema=lambda: clinic.create_schema(check_if_exists=False, verbosity=0),
        read_to_the_end=lambda: check_read_to_the_end(payload, backup),
    )
    if needs_migrate and payload_format.carries_schema:
        _phase(clone.pk, PHASE_MIGRATING)
        call_command("migrate_schemas", schema_name=clinic.schema_name, interactive=False, verbosity=0)


def _media_note(manifest: dict, schema: str = "") -> RespaldoError | None:
    """What the clone's page says about what the new clinic lacks: user accounts (a json backup
    holds records, not accounts), files (a version-1 archive), or files already missing."""
    if not format_for(manifest["payload_format"]).holds_accounts:
        return RespaldoError("clone_without_users", schema=schema)
    if not manifest_has_media(manifest):
        return RespaldoError("media_not_in_backup", "clone_media_not_in_backup")
    return missing_files_note(manifest, "clone_media_missing")


# --- Failures after the commit, and crashes --------------------------------------------------


def _undo(clone: CloneJob) -> None:
    """Remove what a clone committed (its clinic, domain, schema, files); nothing if it committed nothing."""
    files = _media_staging(clone.target_schema)
    if files is not None:
        files.discard()
    if clone.clinic_id is None:
        return
    connection.set_schema_to_public()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(clone.target_schema)).as_string(None)
            )
        Domain.objects.filter(tenant_id=clone.clinic_id).delete()
        Clinic.objects.filter(pk=clone.clinic_id).delete()
    if files is not None:
        shutil.rmtree(files.root, ignore_errors=True)
    logger.warning("Clone #%s: clinic %s removed again after a failure", clone.pk, clone.target_schema)


def clone_recover_crashed(clone: CloneJob) -> None:
    """Settle a clone whose worker died, from what its transaction committed (or not).

    The clinic committed (the job names it): its staged files, complete since the data commits
    only after the whole archive was read, are renamed in and the clone succeeds. Otherwise
    nothing was created: the staged files are removed and the clone fails.
    """
    clone.refresh_from_db()
    if clone.status != JobStatus.RUNNING:
        return
    files = _media_staging(clone.target_schema)
    if clone.clinic_id is not None:
        if files is not None and files.staging.exists():
            files.switch()
        jobs.succeed(CloneJob, clone.pk, note=RespaldoError("recovered", "recovered_clone"))
        return
    if files is not None:
        files.discard()
    jobs.fail(CloneJob, clone.pk, RespaldoError("interrupted", "interrupted_clone"))


def clone_sweep_stale() -> list[CloneJob]:
    """Settle running clones whose worker is gone; returns them."""
    settled = []
    for clone in CloneJob.objects.filter(status=JobStatus.RUNNING):
        if not advisory_lock_held(CLONE_JOBS, clone.pk):
            clone_recover_crashed(clone)
            settled.append(clone)
    return settled
