"""``import_backups``: recreate the catalog from the archives in the backup storage.

Exit status: 0 when the storage could be read, also when some objects were unreadable
(each is listed with why; a damaged file must not stop the rest of a platform being
rebuilt). Non-zero when objects exist and NOT ONE could be read (that is a wrong key or a
wrong bucket, not a damaged file: a script must stop there), when the keys or the storage
are not usable at all, and, with ``--restore``, when a restore of a recreated clinic failed.
"""

from django.core.management.base import CommandError, CommandParser

from backups.exceptions import RespaldoError
from backups.management.base import RespaldoCommand
from backups.models import JobStatus
from backups.services.recover import (
    IMPORTED,
    KNOWN,
    OUTCOMES,
    UNREADABLE,
    ImportedObject,
    ImportReport,
    import_backups,
    restore_newest,
)


class Command(RespaldoCommand):
    help = (
        "Scan the backup storage and recreate the catalog row of every archive this deployment's keys "
        "open (already-known objects are skipped); clinics named by archives are recreated unless "
        "--no-create-clinics. --restore then restores every recreated clinic from its newest backup."
    )
    needs_archive_keys = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-create-clinics",
            dest="create_clinics",
            action="store_false",
            help="List archives of clinics that do not exist here instead of recreating those clinics.",
        )
        parser.add_argument(
            "--restore", action="store_true", help="Restore every clinic recreated by this run from its newest backup."
        )

    def handle(self, *args, create_clinics: bool, restore: bool, **options) -> None:
        # keys not configured, storage unreachable: one clear line (RespaldoCommand)
        report = import_backups(create_clinics=create_clinics)
        for clinic in report.created_clinics:
            domain = clinic.domains.values_list("domain", flat=True).first() or "no domain"
            self.stdout.write(f"created clinic {clinic.schema_name} (id {clinic.pk}, {clinic.name!r}) at {domain}")
        for item in report.objects:
            self.stdout.write(_object_line(item))
        self.stdout.write(_summary(report))
        failed = self._restore_all(report) if restore else 0
        if report.nothing_readable:
            raise CommandError(
                f"None of the {len(report.objects)} stored objects could be read with this deployment's keys."
            )
        if failed:
            raise CommandError(f"{failed} of {len(report.created_clinics)} restores failed.")

    def _restore_all(self, report: ImportReport) -> int:
        """Restore each recreated clinic from its newest backup; return how many failed."""
        failed = 0
        for clinic in report.created_clinics:
            try:
                result = restore_newest(clinic)
            except RespaldoError as exc:
                self.stdout.write(f"restore of {clinic.schema_name} refused: {exc}")
                failed += 1
                continue
            if result is None:
                self.stdout.write(f"restore of {clinic.schema_name}: no backup to restore from")
                failed += 1
            elif result.status != JobStatus.SUCCEEDED:
                self.stdout.write(f"restore #{result.pk} of {clinic.schema_name} failed: {result.error_message()}")
                failed += 1
            else:
                seconds = result.duration.total_seconds() if result.duration else 0.0
                self.stdout.write(
                    f"restored {clinic.schema_name} from backup #{result.backup_id} "
                    f"(restore #{result.pk}, {seconds:.1f}s)"
                )
        return failed


def _object_line(item: ImportedObject) -> str:
    """One line per stored object: what happened to it, and why when nothing was imported."""
    if item.outcome == IMPORTED:
        return f"imported {item.name} -> backup #{item.backup_id} of {item.schema}"
    if item.outcome == KNOWN:
        return f"known {item.name} (backup #{item.backup_id})"
    if item.outcome == UNREADABLE:
        return f"unreadable {item.name}: {item.reason}"
    return f"{item.outcome} {item.name}: {item.detail}"


def _summary(report: ImportReport) -> str:
    counts = ", ".join(f"{report.count(outcome)} {outcome}" for outcome in OUTCOMES)
    return f"{len(report.objects)} stored objects: {counts}; {len(report.created_clinics)} clinics created."
