"""Fixtures for the json payload tests (every test here puts the clinics' sequences back)."""

from __future__ import annotations

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from backups.formats.json.payload import (
    payload_models,
)


@pytest.fixture(autouse=True)
def _sequences_restored(db):
    """Put the clinics' sequences back after each test: unlike rows, they ignore rollbacks.

    Done on a connection of its own, which works even when the test broke its transaction.
    """
    own = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with own.cursor() as cursor:
            positions = []
            for schema in ("clinica", "bienestar"):
                for model in payload_models():
                    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [f"{schema}.{model._meta.db_table}"])
                    (sequence,) = cursor.fetchone()
                    cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
                    positions.append((sequence, *cursor.fetchone()))
        yield
        with own.cursor() as cursor:
            for sequence, last_value, is_called in positions:
                cursor.execute("SELECT setval(%s, %s, %s)", [sequence, last_value, is_called])
    finally:
        own.close()
