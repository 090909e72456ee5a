"""The json group's steps (a mixin of ``run.Bench``): our json backup and restore against
psycopg's COPY TO / COPY FROM of the same tables, and against Django's dumpdata and loaddata
(slow: once per run), on the json clinic.
"""

# ruff: noqa: S608 - bench-made SQL, from fixed names

from __future__ import annotations

from collections.abc import Callable

import generate
from django_tenants.utils import schema_context
from fixtures import payload_to_file
from sampling import Sample, python_child, timed
from startup import TMP

from backups.formats.json.payload import payload_models
from backups.postgres import connect_separately


class JsonSteps:
    """Steps of the json group; use the bench's ``json_schema``, ``json_backup`` and
    ``json_fingerprint``, and the backup and restore mixins' ``ours_backup`` and ``restore_child``."""

    def steps_json(self) -> list:
        with schema_context(self.json_schema):
            self.json_tables = [m._meta.db_table for m in payload_models()]
        return [
            ("copy to", self.copy_to),
            ("copy from", self.copy_from),
            ("ours json backup", lambda: self.ours_backup(self.json_schema, "json")),
            ("ours json restore", self.ours_json_restore),
            ("dumpdata", self.once("dumpdata", self.dumpdata)),
            ("loaddata", self.once("loaddata", self.loaddata)),
        ]

    def once(self, label: str, step: Callable[[], dict[str, Sample]]) -> Callable[[], dict[str, Sample]]:
        """Django's dumpdata and loaddata are slow: measured in one repeat only."""

        def run() -> dict[str, Sample]:
            if label in self.done_once:
                return {}
            self.done_once.add(label)
            return step()

        return run

    def copy_to(self) -> dict[str, Sample]:
        out = TMP / "copy.tsv"

        def run() -> None:
            with connect_separately(autocommit=True) as conn, open(out, "wb") as sink:
                for table in self.json_tables:
                    with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" TO STDOUT') as copy:
                        for data in copy:
                            sink.write(data)

        sample = timed(run)
        sample.size = out.stat().st_size
        self.copy_file_tables = True
        return {"json: psycopg COPY TO (same rows, in-process)": sample}

    def copy_from(self) -> dict[str, Sample]:
        """COPY FROM of every table (after TRUNCATE), in one transaction rolled back."""
        dumps = {}
        with connect_separately(autocommit=True) as conn:
            for table in self.json_tables:
                with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" TO STDOUT') as copy:
                    dumps[table] = b"".join(bytes(d) for d in copy)

        def run() -> None:
            with connect_separately(autocommit=False) as conn:
                names = ", ".join(f'"{self.json_schema}"."{t}"' for t in self.json_tables)
                conn.execute(f"TRUNCATE {names}")
                for table in self.json_tables:
                    with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" FROM STDIN') as copy:
                        copy.write(dumps[table])
                conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                conn.rollback()

        return {"json: psycopg COPY FROM (one transaction, in-process)": timed(run)}

    def ours_json_restore(self) -> dict[str, Sample]:
        sample, restore = self.restore_child(self.json_backup)
        exact = generate.fingerprint(self.json_schema) == self.json_fingerprint
        rows = self.restore_rows("json", sample, restore)
        rows["json: ours restore, whole process"].notes["exact"] = exact
        return rows

    def dumpdata(self) -> dict[str, Sample]:
        out = TMP / "dumpdata.json"
        labels = sorted({m._meta.app_label for m in payload_models()})
        sample = python_child(
            "from django.core.management import call_command\n"
            "from django_tenants.utils import schema_context\n"
            f"with schema_context({self.json_schema!r}):\n"
            f"    call_command('dumpdata', *{labels!r}, output={str(out)!r}, verbosity=0)\n"
        )
        sample.notes = {}
        sample.size = out.stat().st_size
        return {"json: dumpdata (whole process)": sample}

    def loaddata(self) -> dict[str, Sample]:
        fixture = TMP / "loaddata.json"
        if not fixture.exists():
            payload_to_file(self.json_backup, fixture)  # our payload is Django-serialized JSON
        names = ", ".join(f'"{t}"' for t in self.json_tables)
        sample = python_child(
            "from django.core.management import call_command\n"
            "from django.db import connection, transaction\n"
            "from django_tenants.utils import schema_context\n"
            f"with schema_context({self.json_schema!r}), transaction.atomic():\n"
            f"    connection.cursor().execute('TRUNCATE {names}')\n"
            f"    call_command('loaddata', {str(fixture)!r}, verbosity=0)\n"
            "    transaction.set_rollback(True)\n"
        )
        sample.notes = {}
        return {"json: loaddata, one transaction (whole process)": sample}
