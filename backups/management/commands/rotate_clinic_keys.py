from backups.keys.clinic import rewrap_clinic_keys
from backups.management.base import RespaldoCommand


class Command(RespaldoCommand):
    help = (
        "After rotating the deployment's archive key (the new one in BACKUPS_AGE_IDENTITY, the old one moved "
        "to BACKUPS_AGE_OLD_IDENTITIES): wrap every clinic's archive key again to the new key, in the catalog "
        "and in the backup storage. No archive is rewritten. Afterwards the old key only opens archives "
        "written before clinic keys existed."
    )
    needs_archive_keys = True

    def handle(self, *args, **options) -> None:
        count = rewrap_clinic_keys()
        self.stdout.write(f"{count} clinic keys wrapped again to the current deployment key.")
