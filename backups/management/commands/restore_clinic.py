import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from backups.management.base import RespaldoCommand
from backups.models import Backup, JobStatus
from backups.services.backup import clinic_get
from backups.services.restore import restore_request, restore_run


class Command(RespaldoCommand):
    help = (
        "Replace a clinic's data with one of its backups (--backup ID) or with an uploaded file (--file PATH). "
        "A safety backup is taken first. Asks for confirmation unless --yes."
    )
    needs_archive_keys = True

    # No system checks here: they would load the URLs and with them every admin module (about
    # 30 MB) in a process that serves no page. ``manage.py check --deploy`` runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", help="The clinic's schema name, e.g. clinica.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--backup", type=int, help="Id of one of this clinic's backups (see list_backups).")
        source.add_argument("--file", type=Path, help="A backup file downloaded from Respaldo, or a JSON export.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue for a worker.")
        parser.add_argument("--requested-by", default="command line")

    def handle(self, *args, schema, backup, file, yes, run_async, requested_by, **options) -> None:
        clinic = clinic_get(schema)
        if file is not None:
            backup_row = self._upload(clinic, file, requested_by, options["verbosity"])
        else:
            backup_row = Backup.objects.filter(pk=backup).first()
            if backup_row is None:
                raise CommandError(f"There is no backup #{backup}.")
        if not yes:
            self._confirm(clinic, backup_row)
        restore = restore_request(clinic=clinic, backup_id=backup_row.pk, requested_by=requested_by, enqueue=run_async)
        if run_async:
            self.stdout.write(f"Restore #{restore.pk} of {clinic.schema_name} from backup #{backup_row.pk} queued.")
            return
        restore = restore_run(restore_id=restore.pk)
        safety = f" Safety backup: #{restore.safety_backup_id}." if restore.safety_backup_id else ""
        if restore.status != JobStatus.SUCCEEDED:
            raise CommandError(f"Restore #{restore.pk} failed: {restore.error_message()}{safety}")
        migrated = " Migrated forward to this release." if restore.migrated else ""
        self.stdout.write(
            f"Restore #{restore.pk} of {clinic.schema_name} from backup #{backup_row.pk} succeeded "
            f"in {restore.duration.total_seconds():.1f}s.{migrated}{safety}"
        )
        if restore.safety_backup_id:
            self.stdout.write(
                f"To undo: python manage.py restore_clinic {clinic.schema_name} --backup {restore.safety_backup_id}"
            )

    def _upload(self, clinic, path: Path, requested_by: str, verbosity: int) -> Backup:
        from backups.services.upload import upload_accept

        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        with open(path, "rb") as handle, _quiet_log("backups.services.upload", quiet=verbosity < 2):
            accepted = upload_accept(clinic=clinic, source=handle, filename=path.name, requested_by=requested_by)
        backup = accepted.backup
        if accepted.created:
            self.stdout.write(f"File accepted as backup #{backup.pk} ({backup.payload_format}).")
        else:
            self.stdout.write(f"The same file as backup #{backup.pk} ({backup.payload_format}): not stored twice.")
        return backup

    def _confirm(self, clinic, backup: Backup) -> None:
        made = backup.succeeded_at or backup.requested_at
        self.stdout.write(
            f"This replaces ALL data of {clinic.name} ({clinic.schema_name}) with backup #{backup.pk} "
            f"made {made:%Y-%m-%d %H:%M %Z}. A safety backup is taken first."
        )
        if not sys.stdin or not sys.stdin.isatty():
            raise CommandError("Confirmation needed and there is no terminal to ask: run again with --yes.")
        answer = input(f"Type the clinic's schema name ({clinic.schema_name}) to continue: ").strip()
        if answer != clinic.schema_name:
            raise CommandError("Not confirmed: nothing was changed.")


@contextlib.contextmanager
def _quiet_log(name: str, *, quiet: bool) -> Iterator[None]:
    """Hide logger ``name``'s INFO lines (unless ``-v 2``): they would repeat on stderr what the
    command itself prints, a refusal as its CommandError and an accepted file on stdout."""
    logger = logging.getLogger(name)
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
