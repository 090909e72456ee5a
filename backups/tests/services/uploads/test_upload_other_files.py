"""Uploads that are not archives nor JSON: database dumps and SQL scripts, compressed, empty, other and
oversized files, all refused with nothing kept.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import zstandard
from django.core.files.uploadedfile import UploadedFile

from backups.postgres import find_pg_tools, libpq_environment
from backups.tests.helpers import (
    dumpdata,
)
from backups.tests.services.uploads.helpers import (
    Endless,
    refused,
)

pytestmark = pytest.mark.django_db


# --- refused: database dumps and SQL ---------------------------------------------------


def _pg_dump(*args: str) -> bytes:
    tools = find_pg_tools()
    result = subprocess.run(
        [tools.pg_dump, "--schema=clinica", "--table=clinica.dental_dentist", *args],
        env=libpq_environment(),
        capture_output=True,
        check=True,
    )
    return result.stdout


def test_a_pg_dump_custom_file_is_refused(upload_tmp):
    dump = _pg_dump("--format=custom")
    assert dump.startswith(b"PGDMP") and b"dental_dentist" in dump
    error = refused(dump, upload_tmp)
    assert str(error) == (
        "This is a raw pg_dump file. For safety, Respaldo never runs database dumps uploaded by a clinic; "
        "upload a backup downloaded from Respaldo instead."
    )
    assert error.code == "pg_dump"


@pytest.mark.parametrize(
    "script",
    [
        None,  # a real plain-format pg_dump
        b"\n\n   insert into dental_patient (first_name) values ('x');",
        b"BEGIN;\nDROP TABLE dental_patient;\nCOMMIT;",
        b"\\connect clinica\n\\! rm -rf /\n",
        b"CREATE TABLE x (id int);",
        b"SET statement_timeout = 0;",
        b"\xef\xbb\xbf select 1;",
        b"/* dump */ UPDATE dental_patient SET notes = '';",
    ],
    ids=["pg_dump-plain", "insert", "begin", "psql-meta", "create", "set", "bom-select", "comment"],
)
def test_an_sql_script_is_refused(upload_tmp, script):
    data = script if script is not None else _pg_dump("--format=plain")
    error = refused(data, upload_tmp)
    assert str(error).startswith(
        "This is an SQL script. For safety, Respaldo never runs SQL uploaded by a clinic; upload a backup"
    )
    assert error.code == "sql"


# --- refused: other files --------------------------------------------------------------


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive_file:
        archive_file.writestr("export.json", data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (gzip.compress, "gzip"),
        (zstandard.compress, "zstd"),
        (_zip, "zip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
    ],
)
def test_a_compressed_file_is_refused(upload_tmp, compress, name):
    error = refused(compress(dumpdata("dental", indent=2).encode()), upload_tmp)
    assert str(error) == f"This is a compressed file ({name}); upload the backup file itself, not a compressed copy."
    assert error.code == "compressed"


@pytest.mark.parametrize(("content", "code"), [(b"", "empty"), (b" \n\t\r\n ", "empty"), (b"\xef\xbb\xbf\n", "empty")])
def test_an_empty_file_is_refused(upload_tmp, content, code):
    error = refused(content, upload_tmp)
    assert str(error) == "The file is empty." and error.code == code


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        b"X" + os.urandom(4096),
        "Nombre;Apellido\nZoë;Muñoz\n".encode(),
        b"42",
        b"true",
    ],
    ids=["png", "random", "csv", "json-number", "json-true"],
)
def test_any_other_file_is_refused(upload_tmp, content):
    error = refused(content, upload_tmp)
    assert str(error) == "This file is not a Respaldo backup or a JSON export of clinic records."
    assert error.code == "not_recognized"


def test_a_file_over_the_size_limit_is_refused_as_soon_as_the_limit_is_passed(upload_tmp, settings):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 64 << 10
    source = Endless(prefix=b"[")  # a JSON file without end
    error = refused(source, upload_tmp)
    assert str(error) == "The file is larger than the 64.0 KB limit."
    assert error.code == "too_large"
    assert (64 << 10) < source.bytes_read <= (64 << 10) + 1


def read_bytes() -> int:
    """Bytes this process has read so far (any file, pipe or socket), from /proc/self/io."""
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def test_a_file_larger_than_the_limit_is_refused_from_its_size_without_reading_it(upload_tmp, settings, tmp_path):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 16 << 20
    sparse = tmp_path / "huge.respaldo"
    with open(sparse, "wb") as handle:
        handle.truncate(3 * 1024**3)  # 3 GB of holes: no disk used
    with open(sparse, "rb") as handle:
        handle.seek(100)
        before = read_bytes()
        error = refused(handle, upload_tmp)
        assert read_bytes() - before < 1 << 20  # the file was not read (nor copied)
        assert handle.tell() == 100
    assert str(error) == "The file is larger than the 16.0 MB limit." and error.code == "too_large"

    with open(sparse, "r+b") as handle:  # a file within the limit from where it is read is read
        handle.truncate(16 << 20)
        handle.seek(10)
        handle.write(b"SELECT")
        handle.seek(10)
        error = refused(handle, upload_tmp)
    assert error.code == "sql"


def test_an_upload_declared_larger_than_the_default_limit_is_refused_unread(upload_tmp, settings):
    del settings.BACKUPS_MAX_UPLOAD_BYTES  # the default applies: 2 GiB
    content = Endless()
    error = refused(UploadedFile(file=content, name="huge.respaldo", size=3 * 1024**3), upload_tmp)
    assert str(error) == "The file is larger than the 2.0 GB limit."
    assert content.bytes_read == 0
