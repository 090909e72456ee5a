"""A download link's signature is a credential: the servers as deployed (gunicorn, Procfile) and as
demoed (runserver) must never write it to their logs. Both run for real, in their own processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from backups.tests.helpers import free_port
from clinic_site.log_redaction import redact
from conftest import subprocess_env

SECRET = "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQ"
PATH = f"/api/v1/backups/1/file/?sig={SECRET}"


def serve_and_request(command: list[str], log: Path) -> int:
    """Start ``command`` (a server on the test database), GET :data:`PATH` on clinica's host, stop it; the status."""
    port = int(command[-1].rsplit(":", 1)[-1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.2)
            request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers={"Host": "clinica.localhost"})
            try:
                status = urllib.request.urlopen(request, timeout=30).status  # noqa: S310 - our own server
            except urllib.error.HTTPError as exc:
                status = exc.code
            time.sleep(0.5)  # the access log line is written after the answer
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return status


@pytest.mark.usefixtures("live_db")
def test_gunicorn_as_deployed_never_logs_a_link_signature(tmp_path):
    access = tmp_path / "access.log"
    gunicorn = [sys.executable, "-m", "gunicorn", "clinic_site.wsgi", "--access-logfile", str(access)]
    status = serve_and_request([*gunicorn, "--bind", f"127.0.0.1:{free_port()}"], tmp_path / "gunicorn.log")
    assert status == 410  # a made-up signature: the link is refused
    written = access.read_text()
    assert "/api/v1/backups/1/file/" in written and " 410 " in written  # the request was logged...
    assert SECRET not in written + (tmp_path / "gunicorn.log").read_text()  # ...without its signature


@pytest.mark.usefixtures("live_db")
def test_runserver_of_the_demo_never_logs_a_link_signature(tmp_path):
    log = tmp_path / "runserver.log"
    status = serve_and_request(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{free_port()}"], log
    )
    assert status == 410
    written = log.read_text()
    assert "/api/v1/backups/1/file/?sig=[redacted]" in written and SECRET not in written


def test_redact_cuts_every_signature_and_keeps_the_rest():
    line = 'GET /a/?page=2&sig=abc.DEF-123_x:y&q=1 HTTP/1.1" 200 /b/?SIG=zz'
    assert redact(line) == 'GET /a/?page=2&sig=[redacted]&q=1 HTTP/1.1" 200 /b/?SIG=[redacted]'
