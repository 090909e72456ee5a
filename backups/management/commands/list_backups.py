from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.exceptions import ClinicNotFound
from backups.selectors import backup_line, backup_list, platform_backup_list
from backups.services import clinic_get


class Command(BaseCommand):
    help = "List backups, newest first: id, clinic, kind, format, status, size, SHA-256."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", nargs="?", help="Only this clinic's backups.")
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, schema, limit, **options) -> None:
        if schema:
            try:
                backups = backup_list(clinic_id=clinic_get(schema).pk)
            except ClinicNotFound as exc:
                raise CommandError(str(exc)) from None
        else:
            backups = platform_backup_list()
        backups = backups[:limit]
        if not backups:
            self.stdout.write("No backups.")
        for backup in backups:
            self.stdout.write(backup_line(backup))
