"""Settings for django-dbbackup's comparison run only: ours, plus the ``dbbackup`` app.

Used by bench/run.py as ``DJANGO_SETTINGS_MODULE=dbbackup_settings`` (bench/ on PYTHONPATH).
"""

import os

from clinic_site.settings import *  # noqa: F403
from clinic_site.settings import INSTALLED_APPS, STORAGES

INSTALLED_APPS = [*INSTALLED_APPS, "dbbackup"]
DBBACKUP_CONNECTOR_MAPPING = {"django_tenants.postgresql_backend": "dbbackup.db.postgresql.PgDumpBinaryConnector"}
STORAGES = {**STORAGES, "dbbackup": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
DBBACKUP_CONNECTORS = {
    "default": {
        "CONNECTOR": "dbbackup.db.postgresql.PgDumpBinaryConnector",
        "DUMP_CMD": os.environ.get("BENCH_PG_DUMP", "pg_dump"),
    }
}
