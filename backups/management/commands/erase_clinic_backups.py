from django.core.management.base import CommandError, CommandParser

from backups.management.base import RespaldoCommand
from backups.services.offboard import erase_clinic_backups
from clinics.models import Clinic


class Command(RespaldoCommand):
    help = (
        "Crypto-erasure of one clinic's backups (a data-protection request, or a clinic that left): its "
        "archive key is destroyed, so no copy of its backups can be opened any more, wherever it is; then "
        "every stored backup of it is deleted. Cannot be undone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", help="The clinic's schema name.")
        parser.add_argument("--reason", required=True, help="Why (kept in the audit trail).")
        parser.add_argument(
            "--yes", action="store_true", help="Do it: without this flag the command only says what it would erase."
        )

    def handle(self, *args, schema: str, reason: str, yes: bool, **options) -> None:
        clinic = Clinic.objects.filter(schema_name=schema).first()
        if clinic is None or schema == "public":
            raise CommandError(f"There is no clinic '{schema}'.")
        if not reason.strip():
            raise CommandError("Give a reason (--reason): it is kept in the audit trail.")
        stored = clinic.backups.in_storage().count()
        if not yes:
            self.stdout.write(
                f"Would erase the archive key of {schema} and delete its {stored} stored backups. "
                "Nothing changed: add --yes to do it."
            )
            return
        erasure = erase_clinic_backups(clinic, actor="erase_clinic_backups", reason=reason.strip())
        self.stdout.write(f"The archive key of {schema} is destroyed; {erasure.deleted} stored backups deleted.")
        if erasure.kept_held:
            numbers = ", ".join(f"#{pk}" for pk in erasure.kept_held)
            self.stdout.write(f"Kept {len(erasure.kept_held)} backups put on legal hold meanwhile: {numbers}.")
