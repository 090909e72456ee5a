"""The clinic console through the test client: list, back up now, download, restore confirmation, upload.

Every page is scoped to the clinic of the host: another clinic's ids give 404, missing
permissions give 403, typed URL or button alike. (The whole flow with a worker runs in a
real browser in ``test_console_browser.py``.)
"""

import hashlib
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from backups.models import Backup, Download, JobStatus, Restore
from backups.services.backup import backup_request
from backups.services.restore import restore_request
from backups.tests.helpers import LIST, clinica_tables, fake_backup, logged_in, make_backup, stored_path
from clinics.models import Clinic

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    return logged_in("admin", "admin")


@pytest.fixture
def viewer_client():
    """A clinica user who may only view backups."""
    with schema_context("clinica"):
        user = User.objects.create_user("lector", password="lector-pass-1", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_backup", content_type__app_label="backups"))
    return logged_in("lector", "lector-pass-1")


def test_the_list_shows_this_clinics_backups_only_newest_first(admin_client):
    own = [fake_backup(note="primera"), fake_backup(note="segunda")]
    other = fake_backup("bienestar", note="ajena")
    page = admin_client.get(LIST).content.decode()
    assert "primera" in page and "segunda" in page and "ajena" not in page
    assert page.index("segunda") < page.index("primera")
    for backup in own:
        assert f"{LIST}{backup.pk}/download/" in page and f"{LIST}{backup.pk}/restore/" in page
    assert admin_client.get(f"{LIST}{other.pk}/change/").status_code in (302, 404)
    assert 'href="/admin/backups/backup/now/"' in page and "/admin/backups/backup/add/" not in page


def test_the_list_reads_in_spanish_with_badges_in_words():
    client = logged_in("admin", "admin", language="es")
    fake_backup(
        note="cierre",
        status=JobStatus.FAILED,
        storage_name="",
        error_code="dump_failed",
        error_params={"message_id": "dump_failed", "params": {"detail": "x"}},
    )
    page = client.get(LIST).content.decode()
    assert "Respaldos" in page and "Respaldar ahora" in page
    assert "respaldo-failed" in page and "Fallido" in page


@pytest.mark.parametrize("suffix", ["status/", "download/", "restore/", "change/"])
def test_another_clinics_backup_is_not_found_on_any_page(admin_client, suffix):
    other = fake_backup("bienestar")
    assert admin_client.get(f"{LIST}{other.pk}/{suffix}").status_code in (404, 302)
    if suffix != "change/":
        assert admin_client.get(f"{LIST}{other.pk}/{suffix}").status_code == 404


def test_back_up_now_queues_one_backup_with_its_note_and_a_second_click_says_busy(admin_client):
    response = admin_client.post(f"{LIST}now/", {"payload_format": "json", "note": "antes del cierre"}, follow=True)
    backup = Backup.objects.get(clinic__schema_name="clinica", status=JobStatus.PENDING)
    assert (backup.payload_format, backup.note, backup.requested_by, backup.kind) == (
        "json",
        "antes del cierre",
        "admin",
        "manual",
    )
    assert f"Backup #{backup.pk} requested" in response.content.decode()

    again = admin_client.post(f"{LIST}now/", {"payload_format": "pg"}, follow=True).content.decode()
    assert "already has backup" in again
    assert Backup.objects.filter(clinic__schema_name="clinica", status=JobStatus.PENDING).count() == 1

    status = admin_client.get(f"{LIST}{backup.pk}/status/").json()
    assert status["status"] == "pending" and status["finished"] is False


def test_download_streams_the_stored_bytes_with_a_proper_name_and_is_recorded(admin_client):
    backup = make_backup("clinica")
    response = admin_client.get(f"{LIST}{backup.pk}/download/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert (
        hashlib.sha256(body).hexdigest()
        == backup.sha256
        == hashlib.sha256(stored_path(backup.storage_name).read_bytes()).hexdigest()
    )
    assert int(response["Content-Length"]) == len(body) == backup.size
    local = backup.requested_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Madrid"))
    expected = f"clinica-{local:%Y-%m-%d-%H%M}-{backup.pk}.respaldo"
    assert response["Content-Disposition"] == f'attachment; filename="{expected}"'
    record = Download.objects.get(backup=backup)
    assert (record.downloaded_by, record.via, record.clinic.schema_name) == ("admin", "stream", "clinica")


def test_a_failed_backup_cannot_be_downloaded_and_says_why(admin_client):
    failed = fake_backup(status=JobStatus.FAILED, storage_name="")
    page = admin_client.get(f"{LIST}{failed.pk}/download/", follow=True).content.decode()
    assert "has no stored file to download" in page
    assert not Download.objects.filter(backup=failed).exists()


def test_a_view_only_user_lists_backups_but_gets_403_on_every_action(viewer_client):
    backup = fake_backup()
    page = viewer_client.get(LIST).content.decode()
    assert backup.note in page or "fake" not in page
    assert f"{LIST}{backup.pk}/download/" not in page and "/now/" not in page and "/upload/" not in page
    for url in [f"{LIST}{backup.pk}/download/", f"{LIST}{backup.pk}/restore/", f"{LIST}now/", f"{LIST}upload/"]:
        assert viewer_client.get(url).status_code == 403, url
    assert viewer_client.post(f"{LIST}now/", {"payload_format": "pg"}).status_code == 403
    assert viewer_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica"}).status_code == 403
    assert not Restore.objects.exists() and Backup.objects.filter(status=JobStatus.PENDING).count() == 0


def test_reception_sees_no_backups_at_all():
    client = logged_in("recepcion", "recepcion")
    assert "Backups" not in client.get("/admin/").content.decode()
    assert client.get(LIST).status_code == 403
    assert client.get("/admin/backups/restore/").status_code == 403


def test_the_restore_confirmation_shows_counts_and_needs_the_typed_name(admin_client):
    backup = fake_backup(manifest={"tables": clinica_tables(dental_patient=5)})
    page = admin_client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    assert "Patients" in page and "Invoices" in page and "safety backup" in page
    assert ">8<" in page and ">5<" in page  # patients now / in the backup

    wrong = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica "[:-2]})
    assert wrong.status_code == 200 and "Type the clinic" in wrong.content.decode()
    assert not Restore.objects.exists()

    done = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica"})
    restore = Restore.objects.get()
    assert (restore.backup_id, restore.requested_by, restore.status) == (backup.pk, "admin", "pending")
    assert done["Location"] == f"/admin/backups/restore/{restore.pk}/progress/"
    progress = admin_client.get(done["Location"]).content.decode()
    assert f"Restore #{restore.pk}" in progress and "safety backup" in progress


@pytest.mark.parametrize(("payload_format", "warned"), [("pg", True), ("json", False)])
def test_the_confirmation_says_who_may_be_signed_out_only_for_a_format_that_holds_accounts(
    admin_client, payload_format, warned
):
    """The sentence comes from the format (``holds_accounts``), not from a format's name."""
    backup = fake_backup(payload_format=payload_format, manifest={"tables": clinica_tables()})
    page = admin_client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    assert ("This backup also holds the clinic" in page) is warned


def test_a_partial_backup_is_flagged_and_needs_the_extra_tick(admin_client):
    backup = fake_backup(kind=Backup.Kind.UPLOADED, manifest={"tables": clinica_tables(dental_invoice=0)})
    page = admin_client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    assert "This file has no invoices: restoring it empties them" in page
    refused = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica"})
    assert refused.status_code == 200 and "Tick the box" in refused.content.decode()
    assert not Restore.objects.exists()
    admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica", "accept_emptied": "on"})
    assert Restore.objects.filter(backup=backup).exists()


def test_a_restore_while_a_backup_runs_is_refused_on_the_page(admin_client):
    backup = fake_backup(manifest={"tables": clinica_tables()})
    backup_request(clinic="clinica", enqueue=False)
    response = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica"})
    assert response.status_code == 200 and "already has backup" in response.content.decode()
    assert not Restore.objects.exists()


def test_restores_of_another_clinic_are_not_found(admin_client):
    other = Restore.objects.create(clinic=Clinic.objects.get(schema_name="bienestar"), backup=fake_backup("bienestar"))
    for url in [f"/admin/backups/restore/{other.pk}/progress/", f"/admin/backups/restore/{other.pk}/status/"]:
        assert admin_client.get(url).status_code == 404
    assert f"/restore/{other.pk}/" not in admin_client.get("/admin/backups/restore/").content.decode()


def test_an_uploaded_tampered_file_is_refused_inline_in_spanish(upload_folder):
    client = logged_in("admin", "admin", language="es")
    data = bytearray(stored_path(make_backup("clinica").storage_name).read_bytes())
    data[len(data) // 2] ^= 1
    before = set(Backup.objects.values_list("pk", flat=True))
    response = client.post(f"{LIST}upload/", {"file": io.BytesIO(bytes(data))})
    page = response.content.decode()
    assert response.status_code == 200 and 'class="errorlist"' in page
    assert "autenticidad" in page or "dañad" in page
    assert set(Backup.objects.values_list("pk", flat=True)) == before


def test_an_uploaded_own_backup_leads_to_its_confirmation_page(admin_client, upload_folder):
    made = make_backup("clinica")
    data = stored_path(made.storage_name).read_bytes()
    Backup.objects.filter(pk=made.pk).update(expired_at=timezone.now())  # else the upload is that very backup
    upload = io.BytesIO(data)
    upload.name = "copia.respaldo"
    response = admin_client.post(f"{LIST}upload/", {"file": upload})
    uploaded = Backup.objects.filter(kind=Backup.Kind.UPLOADED).get()
    assert response["Location"] == f"{LIST}{uploaded.pk}/restore/"
    assert uploaded.sha256 == hashlib.sha256(data).hexdigest()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(admin_client, upload_folder, settings):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 1000
    before = set(Backup.objects.values_list("pk", flat=True))
    response = admin_client.post(f"{LIST}upload/", {"file": io.BytesIO(b"x" * 50_000)})
    page = response.content.decode()
    assert response.status_code == 200 and "larger than" in page.lower() or "too large" in page.lower()
    assert set(Backup.objects.values_list("pk", flat=True)) == before
    assert list(upload_folder.iterdir()) == []


@pytest.fixture
def upload_folder(settings, tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir(mode=0o700)
    settings.BACKUPS_UPLOAD_TMP_DIR = str(folder)
    return folder


def test_a_backup_in_s3_downloads_through_a_link_valid_five_minutes(admin_client, moto_server, settings):
    import urllib.request

    import boto3

    from backups.tests.helpers import BUCKET, s3_config, use_backups_storage

    boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket=BUCKET)
    use_backups_storage(settings, s3_config(endpoint_url=moto_server))
    backup = make_backup("clinica")
    response = admin_client.get(f"{LIST}{backup.pk}/download/")
    assert response.status_code == 302
    link = response["Location"]
    assert link.startswith(moto_server) and "X-Amz-Expires=300" in link
    assert "response-content-disposition=attachment" in link
    with urllib.request.urlopen(link) as fetched:  # noqa: S310 - the test's own moto server
        assert hashlib.sha256(fetched.read()).hexdigest() == backup.sha256
    assert Download.objects.get(backup=backup).via == "link"


def test_the_upload_page_checks_the_csrf_token_even_though_it_swaps_upload_handlers(upload_folder):
    client = Client(HTTP_HOST="clinica.localhost", enforce_csrf_checks=True)
    with schema_context("clinica"):  # sessions live in the clinic's schema
        client.force_login(User.objects.get(username="admin"))
    before = set(Backup.objects.values_list("pk", flat=True))
    response = client.post(f"{LIST}upload/", {"file": io.BytesIO(b"[]")})
    assert response.status_code == 403
    assert set(Backup.objects.values_list("pk", flat=True)) == before


def test_an_expired_backup_cannot_be_restored_or_downloaded(admin_client):
    from django.utils import timezone

    expired = fake_backup(expired_at=timezone.now(), manifest={"tables": {}})
    page = admin_client.get(f"{LIST}{expired.pk}/restore/", follow=True).content.decode()
    assert "cannot be restored" in page
    with pytest.raises(Exception, match="expired"):
        restore_request(clinic="clinica", backup_id=expired.pk, enqueue=False)
    assert "(it is expired)" in admin_client.get(f"{LIST}{expired.pk}/download/", follow=True).content.decode()
    assert not Restore.objects.exists()


def test_the_confirmation_page_says_whether_the_backup_holds_the_files(admin_client):
    with_files = fake_backup(manifest={"tables": clinica_tables(), "media": {"files": 3, "bytes": 2048, "missing": 0}})
    without = fake_backup(manifest={"tables": clinica_tables()})
    assert "3 files (2.0" in admin_client.get(f"{LIST}{with_files.pk}/restore/").content.decode()
    assert "Not in this backup" in admin_client.get(f"{LIST}{without.pk}/restore/").content.decode()
