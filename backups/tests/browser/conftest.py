"""Fixtures for the browser tests."""

import pytest
from django.db import connection

from backups.models import JobStatus
from backups.tests.browser.helpers import CLINIC, dental_state


@pytest.fixture
def clinica_put_back(live_db):
    """clinica as it was before the test, whatever the test did to it (restored from a backup if needed)."""
    from backups.services.backup import backup_request, backup_run
    from backups.services.restore import restore_request, restore_run

    before = dental_state()
    safety = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    assert safety.status == JobStatus.SUCCEEDED
    yield
    connection.set_schema_to_public()
    if dental_state() != before:
        restore = restore_request(clinic=CLINIC, backup_id=safety.pk, enqueue=False)
        restore_run(restore_id=restore.pk)
    assert dental_state() == before
