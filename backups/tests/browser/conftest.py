"""Fixtures for the browser tests."""

import pytest
from django.db import connection

from backups.models import JobStatus
from backups.tests.browser.helpers import CLINIC, dental_state


@pytest.fixture
def clinica_put_back(live_db):
    """clinica as it was before the test, whatever the test did to it (restored from a backup if needed)."""
    from backups import services

    before = dental_state()
    safety = services.backup_run(backup_id=services.backup_request(clinic=CLINIC, enqueue=False).pk)
    assert safety.status == JobStatus.SUCCEEDED
    yield
    connection.set_schema_to_public()
    if dental_state() != before:
        restore = services.restore_request(clinic=CLINIC, backup_id=safety.pk, enqueue=False)
        services.restore_run(restore_id=restore.pk)
    assert dental_state() == before
