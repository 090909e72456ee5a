from django.core.management.base import CommandParser

from backups.management.base import RespaldoCommand
from clinics.demo import seed_demo


class Command(RespaldoCommand):
    help = "Create (or top up) the demo platform, clinics, records and logins. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clinics", type=int, default=2, help="How many demo clinics (default 2).")
        parser.add_argument("--patients", type=int, default=40, help="Patients per clinic (default 40).")
        parser.add_argument("--port", type=int, default=8000, help="Port shown in the printed URLs.")

    def handle(self, *args, clinics: int, patients: int, port: int, **options) -> None:
        if clinics < 1 or patients < 0:
            self.stderr.write("--clinics must be at least 1 and --patients at least 0.")
            raise SystemExit(2)
        logins = seed_demo(clinics=clinics, patients=patients, port=port)
        self.stdout.write(self.style.SUCCESS("Demo ready. Log in at:"))
        for login in logins:
            self.stdout.write(f"  {login.url:<40} {login.username} / {login.password}   ({login.role})")
