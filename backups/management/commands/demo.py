import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandParser

from backups.management.base import RespaldoCommand
from clinics.demo import seed_demo


class Command(RespaldoCommand):
    help = "Run the demo: migrate, seed demo data, start a django-q2 worker and the web server. Ctrl-C stops all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1", help="Address for the web server (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--patients", type=int, default=40, help="Patients per demo clinic.")

    def handle(self, *args, addr: str, port: int, patients: int, **options) -> None:
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        call_command("migrate_schemas", tenant=True, interactive=False, verbosity=0)
        call_command("refresh_clinic_template", verbosity=0)
        logins = seed_demo(patients=patients, port=port)
        os.environ.setdefault("BACKUPS_CONSOLE_PORT", str(port))  # the worker's email links reach this server
        children = [
            subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=settings.BASE_DIR),
            subprocess.Popen(
                [sys.executable, "manage.py", "runserver", "--noreload", f"{addr}:{port}"], cwd=settings.BASE_DIR
            ),
        ]
        self.stdout.write(self.style.SUCCESS("\nRespaldo demo is running (worker + web). Log in at:"))
        for login in logins:
            self.stdout.write(f"  {login.url:<40} {login.username} / {login.password}   ({login.role})")
        self.stdout.write("Press Ctrl-C to stop everything.\n")
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Demo stopped.")
