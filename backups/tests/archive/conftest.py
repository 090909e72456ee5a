"""Fixtures for the archive tests: the shell variables an operator types before pasting."""

from __future__ import annotations

import pytest
from django.conf import settings

from backups.postgres import find_pg_tools
from backups.tests.archive.helpers import (
    SCHEMA,
)
from conftest import database_url


@pytest.fixture
def operator(tmp_path) -> dict[str, str]:
    """The variables of the doc's ``variables`` block, with real values; ``cwd`` is an empty folder."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    return {
        "ARCHIVE": "",  # set by each test
        "DEPLOYMENT_KEY": str(settings.BACKUPS_AGE_IDENTITY_FILE),
        "CLINIC_KEY": "",  # set by take_clinic_key
        "KEYS": str(settings.BACKUPS_AGE_IDENTITY_FILE),
        "WORK": str(work),
        "PG_BIN": str(find_pg_tools().bin_dir),
        "DATABASE_URL": database_url(),
        "SCHEMA": SCHEMA,
    }
