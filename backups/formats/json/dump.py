"""The json payload written from an exported snapshot, as a stream (a thread writes, the caller reads)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import IO

from django.db import connection, transaction
from django_tenants.utils import schema_context

from backups.exceptions import as_respaldo_error
from backups.formats.json.payload import write_json_payload
from backups.postgres import DumpError


@contextlib.contextmanager
def json_dump_stream(schema: str, snapshot_id: str, counts_out: dict[str, int]) -> Iterator[IO[bytes]]:
    """Yield a readable fed by a thread writing ``schema``'s json payload as the snapshot saw it.

    ``counts_out`` receives the rows written per table. On leaving, a failure of the writer
    is raised as ``DumpError``.
    """
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out, schema_context(schema), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot_id])
                counts_out.update(write_json_payload(out))
        except BaseException as exc:  # handed to the reading side
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=produce, name="json-payload", daemon=True)
    thread.start()
    try:
        yield reader
    finally:
        reader.close()
        thread.join()
    if failure:
        reason = as_respaldo_error(failure[0]) or failure[0]
        raise DumpError(f"The JSON export failed: {reason}") from failure[0]
