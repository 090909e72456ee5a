"""Fixtures for the backup tests that need real worker processes."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from conftest import subprocess_env


@pytest.fixture
def cluster(live_db, tmp_path):
    """Start ``manage.py qcluster`` processes on the test database; stop them afterwards."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> subprocess.Popen:
        log = open(tmp_path / f"qcluster-{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=subprocess_env(Q_WORKERS="1", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = Path(log.name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


from backups.tests.test_storage import moto_server  # noqa: E402, F401 - a fixture shared with the pipeline tests
