"""Tests of the payload formats (backups/formats/: pg and json payloads, restore into a schema)
and of the PostgreSQL tools (backups/postgres.py)."""
