from datetime import datetime

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from backups.exceptions import RespaldoError, render
from backups.management.base import RespaldoCommand
from backups.models import Backup
from backups.operations import drills


def passed(backup: Backup, *, drilled: bool, since: datetime) -> bool:
    """Whether the check that started at ``since`` succeeded (a verification leaves an older drill alone)."""
    if drilled:
        return backup.drill_status == drills.SUCCEEDED and bool(backup.drilled_at and backup.drilled_at >= since)
    return bool(backup.verified_at and backup.verified_at >= since)


def outcome_line(backup: Backup, *, drilled: bool, ok: bool) -> str:
    """One line: which backup, what was checked, and how it ended (with the reason of a failure)."""
    what = "drill" if drilled else "verification"
    head = f"{backup.clinic.schema_name}: backup #{backup.pk} ({backup.kind}, {backup.payload_format})"
    if ok:
        return f"{head} {what} ok"
    error = backup.drill_error or {}
    return f"{head} {what} FAILED: {render(error.get('message_id') or error.get('code', '?'), error.get('params'))}"


class Command(RespaldoCommand):
    help = (
        "Verify each clinic's newest successful backup (checksum, authenticity, manifest), or with --drill "
        "restore it into a scratch schema that is rolled back. Exits non-zero when any failed."
    )
    needs_archive_keys = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", nargs="?", help="Only this clinic (its schema name, e.g. clinica).")
        parser.add_argument("--drill", action="store_true", help="Restore into a scratch schema, not only verify.")

    def handle(self, *args, schema, drill, **options) -> None:
        targets = drills.latest_to_check(schema)
        if schema and not targets:
            raise CommandError(f"There is no clinic '{schema}'.")
        failures = 0
        for clinic, backup in targets:
            if backup is None:
                self.stdout.write(f"{clinic.schema_name}: no successful backup to check")
                continue
            since = timezone.now()
            try:
                checked = drills.drill(backup) if drill else drills.verify(backup)
            except RespaldoError as exc:
                self.stderr.write(f"{clinic.schema_name}: backup #{backup.pk}: {exc}")
                failures += 1
                continue
            ok = passed(checked, drilled=drill, since=since)
            line = outcome_line(checked, drilled=drill, ok=ok)
            if ok:
                self.stdout.write(line)
            else:
                failures += 1
                self.stderr.write(line)
        if failures:
            raise CommandError(f"{failures} of {len(targets)} checks failed.")
