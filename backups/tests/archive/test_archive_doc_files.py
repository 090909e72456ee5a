"""The pasted commands of docs/archive-format.md take the clinic's files (archive version 2) out
byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from django.db import connection
from django_tenants.utils import schema_context

from backups.tests.archive.helpers import (
    SCHEMA,
    make_backup,
    paste,
    take_clinic_key,
)
from backups.tests.helpers import stored_path
from dental.models import Patient

# --- the clinic's files (archive version 2) -----------------------------------------------


def test_the_pasted_commands_take_the_clinics_files_out_byte_for_byte(scratch_clinic, operator, settings, tmp_path):
    from django.core.files.base import ContentFile

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES}
    contents = [b"\x89PNG an x-ray" * 3000, bytes(range(256)) * 40, b""]
    written = {}
    with schema_context(SCHEMA):
        for index, patient in enumerate(Patient.objects.order_by("pk")[: len(contents)]):
            patient.xray.save(f"x-{index}.png", ContentFile(contents[index]), save=True)
            written[patient.xray.name] = contents[index]
    connection.set_schema_to_public()
    backup = make_backup()
    operator["ARCHIVE"] = str(stored_path(backup.storage_name))
    take_clinic_key(operator)
    elsewhere = tmp_path / "elsewhere"
    work = Path(operator["WORK"])

    listed = paste("list", operator, cwd=elsewhere)
    assert listed.status == 0, listed.stderr
    members = re.findall(r"\S+$", listed.stdout, re.M)
    assert members[-1] == "auth.json" and sorted(members[-4:-1]) == sorted("media/" + name for name in written)

    verified = paste("verify", operator, cwd=elsewhere)
    assert verified.status == 0, verified.stderr
    assert {str(p.relative_to(work / "media")): p.read_bytes() for p in (work / "media").rglob("*") if p.is_file()} == (
        written
    )

    extracted = paste("media-extract", operator, cwd=elsewhere)
    assert extracted.status == 0, extracted.stderr
    out = work / "unverified" / "media"
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == written
    for name, data in written.items():
        assert f"{hashlib.sha256(data).hexdigest()}  {out / name}" in extracted.stdout
