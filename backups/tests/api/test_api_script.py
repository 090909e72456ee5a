"""The done-when of the JSON API: a script that uses only ``requests`` and a token backs up, waits,
downloads, checks the SHA-256 and restores ``clinica`` through a real server and a real worker;
the same script with ``bienestar``'s ids gets 404s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from backups.models import ApiToken, AuditEntry, Backup, JobStatus, Restore
from backups.tests.helpers import fake_backup, make_token

SCRIPT = Path(settings.BASE_DIR) / "scripts" / "api_client.py"


@pytest.fixture
def committed_token(live_db):
    secret = make_token()
    yield secret
    prefixes = list(ApiToken.objects.values_list("prefix", flat=True))
    AuditEntry.objects.filter(details__token__in=prefixes).delete()
    ApiToken.objects.all().delete()


def test_a_requests_only_script_round_trips_clinica_and_gets_404_for_bienestars_ids(
    web_server, cluster, committed_token, tmp_path
):
    cluster()

    def script(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(SCRIPT), "--url", f"http://127.0.0.1:{web_server}"]
        command += ["--host", "clinica.localhost", "--token", committed_token, "--timeout", "300", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    source = SCRIPT.read_text()
    imported = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported - {"__future__", "argparse", "hashlib", "sys", "time", "urllib.parse"} == {"requests"}

    out = tmp_path / "clinica.respaldo"
    done = script("round-trip", "--confirm", "clinica", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    backup = Backup.objects.filter(clinic__schema_name="clinica", note="round trip through the API").get()
    restore = Restore.objects.get(backup=backup)
    assert backup.status == JobStatus.SUCCEEDED and backup.requested_by == "admin"
    assert (restore.status, restore.outcome) == (JobStatus.SUCCEEDED, "restored"), restore.error_message()
    assert f"SHA-256 {backup.sha256} matches" in done.stdout and out.stat().st_size == backup.size
    assert f"restore #{restore.pk} succeeded" in done.stdout

    theirs = fake_backup("bienestar")
    for args in (["show", str(theirs.pk)], ["download", str(theirs.pk)], ["restore", str(theirs.pk), "--confirm", "x"]):
        refused = script(*args)
        assert refused.returncode == 1 and "HTTP 404 api_backup_not_found" in refused.stderr, args
    assert not Restore.objects.filter(backup=theirs).exists()
