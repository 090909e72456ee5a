"""The platform's "Clone a clinic" page: asks for a clone, follows it, refuses clearly."""

from __future__ import annotations

import pytest

from backups.models import CloneJob
from backups.services import clone as clones
from backups.tests.helpers import NEW, NEW_DOMAIN, SCHEMA, make_backup, platform_admin
from clinics.models import Clinic
from conftest import host_client

NEW_PAGE = "/admin/backups/clonejob/new/"
pytestmark = pytest.mark.usefixtures("created", "media_root")  # clones removed (test_clone), private media (conftest)


def test_the_platform_clones_a_clinic_from_its_newest_backup_and_follows_the_job(scratch_clinic):
    pg = make_backup()
    make_backup(payload_format="json")  # newer, but without the clinic's users: not the default
    client = platform_admin()
    listing = client.get("/admin/backups/clonejob/").content.decode()
    assert NEW_PAGE in listing  # the "Clone a clinic" button
    form = client.get(NEW_PAGE, {"clinic": scratch_clinic.pk})
    assert form.status_code == 200 and "New schema name" in form.content.decode()

    answer = client.post(NEW_PAGE, {"source": scratch_clinic.pk, "schema_name": NEW, "name": "Formación"}, follow=True)
    job = CloneJob.objects.get()
    assert answer.redirect_chain[-1][0] == f"/admin/backups/clonejob/{job.pk}/change/"
    page = answer.content.decode()
    assert f"Clone #{job.pk} asked" in page and "waiting for a worker" in page
    assert '<meta http-equiv="refresh" content="2">' in page  # follows the job while it runs
    assert job.source_backup == pg and job.target_domain == NEW_DOMAIN and job.requested_by == "superadmin"

    clones.clone_run(clone_id=job.pk)  # what the worker does with the queued task

    page = client.get(f"/admin/backups/clonejob/{job.pk}/change/").content.decode()
    assert "Succeeded" in page and 'http-equiv="refresh"' not in page
    assert f"http://{NEW_DOMAIN}/admin/" in page  # "Open the new clinic's admin"
    assert Clinic.objects.get(schema_name=NEW).name == "Formación"
    assert host_client(NEW_DOMAIN).get("/admin/login/").status_code == 200


def test_a_taken_name_is_refused_on_the_form_and_nothing_is_asked(scratch_clinic):
    make_backup()
    client = platform_admin()
    page = client.post(NEW_PAGE, {"source": scratch_clinic.pk, "schema_name": SCHEMA}).content.decode()
    assert "already used by clinic" in page and not CloneJob.objects.exists()
    page = client.post(NEW_PAGE, {"source": scratch_clinic.pk, "schema_name": "Mal-Nombre"}).content.decode()
    assert "cannot be a clinic" in page and not CloneJob.objects.exists()
    page = client.post(NEW_PAGE, {"source": scratch_clinic.pk, "backup": 999999, "schema_name": NEW}).content.decode()
    assert "This clinic has no such backup to copy." in page and not CloneJob.objects.exists()


def test_clinic_administrators_never_see_clones(clinic_client):
    assert clinic_client.post("/admin/login/", {"username": "admin", "password": "admin"}).status_code == 302
    assert clinic_client.get("/admin/").status_code == 200
    assert clinic_client.get("/admin/backups/clonejob/").status_code == 404
    assert clinic_client.get(NEW_PAGE).status_code == 404
