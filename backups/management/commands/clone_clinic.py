from django.core.management.base import CommandError, CommandParser

from backups.management.base import RespaldoCommand
from backups.models import JobStatus
from backups.services.clone import clone_request, clone_run


class Command(RespaldoCommand):
    help = (
        "Create a NEW clinic from a backup (of any clinic, also an offboarded one): its data, users and files "
        "under a new schema name and domain. The clinic the backup came from is not touched."
    )
    needs_archive_keys = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup", type=int, help="Id of the backup to copy (see list_backups).")
        parser.add_argument("schema", help="The new clinic's schema name, e.g. clinica_formacion.")
        parser.add_argument(
            "--name", default="", help="The new clinic's name (default: the source's, with the schema)."
        )
        parser.add_argument("--domain", default=None, help="The new clinic's domain (default: <schema>.<platform>).")
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue for a worker.")
        parser.add_argument("--requested-by", default="command line")

    def handle(self, *args, backup, schema, name, domain, run_async, requested_by, **options) -> None:
        clone = clone_request(
            source_backup_id=backup,
            schema_name=schema,
            name=name,
            domain=domain,
            requested_by=requested_by,
            enqueue=run_async,
        )
        if run_async:
            self.stdout.write(f"Clone #{clone.pk} of backup #{backup} into {schema} queued.")
            return
        clone = clone_run(clone_id=clone.pk)
        if clone.status != JobStatus.SUCCEEDED:
            raise CommandError(f"Clone #{clone.pk} failed: {clone.error_message()}")
        migrated = " Migrated forward to this release." if clone.migrated else ""
        note = f" {clone.error_message()}" if clone.error_code else ""
        self.stdout.write(
            f"Clone #{clone.pk}: clinic {clone.target_name!r} ({clone.target_schema}) created from backup #{backup} "
            f"in {clone.duration.total_seconds():.1f}s, at {clone.target_domain}.{migrated}{note}"
        )
