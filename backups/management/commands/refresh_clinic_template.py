from django.core.management.base import CommandError

from backups.management.base import RespaldoCommand
from backups.services import clinic_template


class Command(RespaldoCommand):
    help = (
        "Rebuild the template new clinics are copied from (clinic_template) if the code has a migration it "
        "lacks; a release runs it after migrate_schemas (the Procfile), so that clinics created in the "
        "console are copied from a current template."
    )

    def handle(self, *args, **options) -> None:
        was_current = clinic_template.template_is_current()
        if not clinic_template.ensure_template():
            raise CommandError(f"The clinic template {clinic_template.TEMPLATE_SCHEMA} could not be rebuilt.")
        if options["verbosity"]:
            done = "was current" if was_current else "rebuilt from the migrations"
            self.stdout.write(f"Clinic template {clinic_template.TEMPLATE_SCHEMA}: {done}.")
