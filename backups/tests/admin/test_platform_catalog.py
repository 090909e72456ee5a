"""The platform's catalog pages: every clinic's backups and restores, a clinic filter, and the
catalog exported as CSV and XLSX through django-import-export (opened with openpyxl)."""

from __future__ import annotations

import csv
import io
import re

import openpyxl
import pytest

from backups.models import Backup, JobStatus
from backups.tests.helpers import platform_admin
from clinics.models import Clinic

pytestmark = pytest.mark.django_db

EXPORT = "/admin/backups/backup/export/"


def _catalog() -> tuple[Clinic, Clinic]:
    clinica, bienestar = Clinic.objects.get(schema_name="clinica"), Clinic.objects.get(schema_name="bienestar")
    for index in range(3):
        Backup.objects.create(clinic=clinica, status=JobStatus.SUCCEEDED, size=1000 + index, sha256="a" * 64)
    Backup.objects.create(clinic=bienestar, status=JobStatus.FAILED, error_code="storage")
    return clinica, bienestar


def _export(client, query: str, file_format: str) -> bytes:
    """Post the export form as the page does: every field ticked, the chosen format."""
    form = client.get(EXPORT + query).content.decode()
    choices = dict((label, value) for value, label in re.findall(r'<option value="(\d+)"[^>]*>([^<]+)</option>', form))
    ticked = {name: "on" for name in re.findall(r'name="(backupresource_[a-z_0-9]+)"', form)}
    answer = client.post(EXPORT + query, {"format": choices[file_format], "resource": "0", **ticked})
    assert answer.status_code == 200, answer.content[:500]
    return answer.content


def _clinics_listed(page: str) -> list[str]:
    return re.findall(r'<td class="field-clinic[^"]*">([^<]*)</td>', page)


def test_every_clinics_backups_are_listed_and_filtered_by_clinic():
    clinica, bienestar = _catalog()
    client = platform_admin()
    page = client.get("/admin/backups/backup/").content.decode()
    assert sorted(_clinics_listed(page)) == sorted([bienestar.name] + [clinica.name] * 3)
    only = client.get(f"/admin/backups/backup/?clinic__id__exact={bienestar.pk}").content.decode()
    assert _clinics_listed(only) == [bienestar.name] and "Failed" in only
    assert client.get("/admin/backups/restore/").status_code == 200
    assert client.get(f"/admin/backups/backup/{Backup.objects.first().pk}/change/").status_code == 200


def test_the_catalog_exports_as_xlsx_that_openpyxl_reads():
    clinica, bienestar = _catalog()
    client = platform_admin()
    data = _export(client, f"?clinic__id__exact={clinica.pk}", "xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert header[:3] == ("id", "clinic_schema", "clinic_name") and "sha256" in header
    expected = set(Backup.objects.filter(clinic=clinica).values_list("pk", flat=True))
    assert {row[0] for row in body} == expected  # exactly what the filter selects
    assert {row[1] for row in body} == {"clinica"}


def test_the_catalog_exports_as_csv():
    _catalog()
    client = platform_admin()
    rows = list(csv.DictReader(io.StringIO(_export(client, "", "csv").decode("utf-8-sig"))))
    assert len(rows) == Backup.objects.count()
    failed = [row for row in rows if row["status"] == JobStatus.FAILED]
    assert failed and failed[0]["clinic_schema"] == "bienestar" and failed[0]["error_code"] == "storage"
