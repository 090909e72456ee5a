from django.core.management.base import BaseCommand, CommandError

from backups.archive import KeyConfigError
from backups.clinic_keys import rewrap_clinic_keys
from backups.storage_errors import StorageError


class Command(BaseCommand):
    help = (
        "After rotating the deployment's archive key (the new one in BACKUPS_AGE_IDENTITY, the old one moved "
        "to BACKUPS_AGE_OLD_IDENTITIES): wrap every clinic's archive key again to the new key, in the catalog "
        "and in the backup storage. No archive is rewritten. Afterwards the old key only opens archives "
        "written before clinic keys existed."
    )

    def handle(self, *args, **options) -> None:
        try:
            count = rewrap_clinic_keys()
        except (KeyConfigError, StorageError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{count} clinic keys wrapped again to the current deployment key.")
