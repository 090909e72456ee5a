"""GET /healthz on the platform's host: each check for real, 503 when one fails, no secrets."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Task

from backups.models import Backup, JobStatus
from backups.operations.alerts import stale_clinics
from clinics.models import Clinic
from conftest import host_client

pytestmark = pytest.mark.django_db


def worker_ran(minutes_ago: float) -> None:
    when = timezone.now() - timedelta(minutes=minutes_ago)
    Task.objects.create(
        id=f"t{minutes_ago}",
        name="sweep",
        func="backups.tasks.sweep_stale_jobs",
        started=when,
        stopped=when,
        success=True,
    )


def test_healthy_when_every_part_answers():
    worker_ran(1)
    Backup.objects.create(
        clinic=Clinic.objects.get(schema_name="clinica"), status=JobStatus.SUCCEEDED, succeeded_at=timezone.now()
    )
    response = host_client("localhost").get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["pg_tools"]["detail"].startswith("pg_dump ")


def test_no_worker_seen_lately_is_a_503_that_says_so():
    worker_ran(30)
    response = host_client("localhost").get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"] == {"ok": False, "detail": "last task finished 30 min ago"}


def test_an_unreachable_storage_is_a_503_naming_no_path(settings, tmp_path):
    worker_ran(1)
    missing = tmp_path / "gone"
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(missing)}},
    }
    missing.write_text("a file where the folder should be")
    response = host_client("localhost").get("/healthz")
    body = response.json()
    assert response.status_code == 503 and body["checks"]["storage"]["ok"] is False
    assert str(tmp_path) not in response.content.decode()


def test_stale_clinics_are_counted_by_their_own_threshold():
    now = timezone.now()
    clinica = Clinic.objects.get(schema_name="clinica")
    Clinic.objects.filter(pk=clinica.pk).update(created_at=now - timedelta(days=10))
    Backup.objects.create(clinic=clinica, status=JobStatus.SUCCEEDED, succeeded_at=now - timedelta(hours=27))
    assert "clinica" in {stale.clinic.schema_name for stale in stale_clinics(now)}
    clinica.backup_policy.__class__.objects.filter(clinic=clinica).update(stale_after_hours=48)
    assert "clinica" not in {stale.clinic.schema_name for stale in stale_clinics(now)}


def test_clinic_hosts_have_no_healthz():
    assert host_client("clinica.localhost").get("/healthz").status_code == 404
