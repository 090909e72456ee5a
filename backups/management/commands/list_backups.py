from django.core.management.base import CommandParser

from backups.management.base import RespaldoCommand, backup_line
from backups.selectors import backup_list, platform_backup_list
from backups.services.backup import clinic_get


class Command(RespaldoCommand):
    help = "List backups, newest first: id, clinic, kind, format, status, size, SHA-256."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", nargs="?", help="Only this clinic's backups.")
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, schema, limit, **options) -> None:
        backups = backup_list(clinic_id=clinic_get(schema).pk) if schema else platform_backup_list()
        backups = backups[:limit]
        if not backups:
            self.stdout.write("No backups.")
        for backup in backups:
            self.stdout.write(backup_line(backup))
