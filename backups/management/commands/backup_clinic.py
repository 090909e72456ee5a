from django.core.management.base import CommandError, CommandParser

from backups.exceptions import RespaldoError
from backups.management.base import RespaldoCommand, backup_line
from backups.models import Backup, JobStatus
from backups.services.backup import backup_request, backup_run, clinic_get
from backups.services.policy import policy_for
from clinics.models import Clinic


class Command(RespaldoCommand):
    help = (
        "Back up one clinic (or --all, as their backup policies say: their format, and not those whose daily "
        "backups are off). Runs here and waits, unless --async hands it to a worker."
    )

    # No system checks here: they would load the URLs and with them every admin module (about
    # 30 MB) in a process that serves no page. ``manage.py check --deploy`` runs them.
    requires_system_checks: list[str] = []
    # A refused key setting is the deployment's, not a clinic's failure: one line, nothing recorded.
    needs_archive_keys = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", nargs="?", help="The clinic's schema name, e.g. clinica.")
        parser.add_argument("--all", action="store_true", help="Back up every clinic.")
        parser.add_argument(
            "--format", choices=Backup.Format.values, default=None, help="Default: the clinic's policy (pg)."
        )
        parser.add_argument("--async", dest="run_async", action="store_true", help="Enqueue for a worker.")
        parser.add_argument("--requested-by", default="command line")

    def handle(self, *args, schema, all, format, run_async, requested_by, **options) -> None:
        if bool(schema) == bool(all):
            raise CommandError("Name one clinic's schema, or use --all.")
        targets = list(Clinic.objects.exclude(schema_name="public").order_by("schema_name")) if all else [schema]
        failures = 0
        for target in targets:
            try:
                chosen = self.chosen_format(target, format, all)
                if chosen is None:
                    continue
                backup = backup_request(
                    clinic=target, payload_format=chosen, requested_by=requested_by, enqueue=run_async
                )
            except RespaldoError as exc:
                if not all:
                    raise  # one line (RespaldoCommand)
                self.stderr.write(f"{getattr(target, 'schema_name', target)}: {exc}")
                failures += 1
                continue
            if not run_async:
                backup = backup_run(backup_id=backup.pk)
            self.stdout.write(backup_line(backup))
            if backup.status == JobStatus.FAILED:
                failures += 1
                if not all:
                    raise CommandError(f"Backup #{backup.pk} failed: {backup.error_message()}")
        if failures:
            raise CommandError(f"{failures} of {len(targets)} backups failed.")

    def chosen_format(self, target: Clinic | str, given: str | None, all_clinics: bool) -> str | None:
        """The format to back up ``target`` in: ``--format``, else its policy's; None to skip it (--all, policy off)."""
        policy = policy_for(clinic_get(target))
        if all_clinics and not policy.enabled:
            self.stdout.write(f"{policy.clinic.schema_name}: skipped, daily backups are off in its backup policy")
            return None
        return given or policy.payload_format
