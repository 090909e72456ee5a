"""The console as a Spanish-speaking clinic administrator reads it (issue 26).

The main pages, rendered in Spanish through the test client with rows like the services
write them (a scheduled backup, safety backups with the notes the services store in
English, a restore, the system's audit entries), carry none of the English or the wrong
Spanish a reader saw, and do carry the right words.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import AuditEntry, Backup, JobStatus, Restore
from backups.tests.helpers import fake_backup, logged_in, platform_admin
from clinics.models import Clinic

pytestmark = pytest.mark.django_db
LIST = "/admin/backups/backup/"

# Seen on these pages before: English left in, "copia" for a backup, feminine backups,
# Django's phrases built around our words, "0 minutes ago".
WRONG = [
    "copia de seguridad",
    "copia de Respaldo",
    "Por solicitada",
    "Vista respaldo",
    "Solicitada por",
    "schedule",
    "selective restore",
    "offboarding",
    "relationships",
    "Schema name",
    "✓ on",
    "0 minutes",
    "hace 0 minutos",
    "Completada (",  # a backup's title: "#1 clinica Programada (Completada)"
    "Programada",
    "Clinic ",  # a catalog column named by its foreign key
    "Backup id",
    "Por caducada",
]


def visible_text(page: str) -> str:
    """What a reader sees: no scripts, styles or tags, entities decoded, spaces squeezed."""
    page = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture
def clinic_rows():
    """clinica's rows as the services leave them: scheduled backup, two safety backups, a restore, audit."""
    clinic = Clinic.objects.get(schema_name="clinica")
    now = timezone.now()
    done = {"status": JobStatus.SUCCEEDED, "succeeded_at": now, "started_at": now - timedelta(seconds=30)}
    scheduled = fake_backup(kind=Backup.Kind.SCHEDULED, requested_by="schedule", **done)
    selective = fake_backup(
        kind=Backup.Kind.PRE_RESTORE, requested_by="admin", note=f"selective restore from #{scheduled.pk}", **done
    )
    safety = fake_backup(kind=Backup.Kind.PRE_RESTORE, requested_by="admin", note="offboarding", **done)
    restore = Restore.objects.create(
        clinic=clinic, backup=scheduled, safety_backup=safety, requested_by="admin", outcome="restored", **done
    )
    AuditEntry.objects.create(clinic=clinic, actor="system", action=AuditEntry.Action.PRUNED)
    AuditEntry.objects.create(
        clinic=clinic, actor="schedule", action=AuditEntry.Action.BACKUP_REQUESTED, backup_id_ref=scheduled.pk
    )
    return {"scheduled": scheduled, "selective": selective, "safety": safety, "restore": restore}


def spanish_pages(rows) -> dict[str, str]:
    client = logged_in("admin", "admin", language="es")
    urls = {
        "index": "/admin/",
        "backups": LIST,
        "backup": f"{LIST}{rows['scheduled'].pk}/change/",
        "safety backup": f"{LIST}{rows['selective'].pk}/change/",
        "restore confirmation": f"{LIST}{rows['scheduled'].pk}/restore/",
        "undo confirmation": f"{LIST}{rows['safety'].pk}/restore/",
        "restore history": "/admin/backups/restore/",
        "restore": f"/admin/backups/restore/{rows['restore'].pk}/progress/",
        "audit trail": "/admin/backups/auditentry/",
    }
    pages = {}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, name
        pages[name] = response.content.decode()
    platform = platform_admin()
    platform_urls = {
        "platform index": "/admin/",
        "platform clinics": "/admin/clinics/clinic/",
        "platform backups": "/admin/backups/backup/",
        "platform restores": "/admin/backups/restore/",
        "platform audit trail": "/admin/backups/auditentry/",
    }
    for name, url in platform_urls.items():
        response = platform.get(url, HTTP_ACCEPT_LANGUAGE="es")
        assert response.status_code == 200, name
        pages[name] = response.content.decode()
    return pages


def test_the_console_in_spanish_has_no_english_left_and_says_respaldo_right(clinic_rows):
    pages = spanish_pages(clinic_rows)
    problems = []
    for name, page in pages.items():
        text = visible_text(page)
        problems += [
            f"{name}: {wrong!r} in «{text[max(0, text.find(wrong) - 60) :][:140]}»" for wrong in WRONG if wrong in text
        ]
        # Django's own "Change" (links, buttons) stays "Modificar": ours, with its context, does not touch it
        if re.search(r">\s*Cambio\s*</a>", page):
            problems.append(f"{name}: Django's change link reads 'Cambio'")
    assert not problems, "\n".join(problems)

    assert "Modificar" in visible_text(pages["index"]) and "Modificar" in visible_text(pages["platform index"])
    backups = visible_text(pages["backups"])
    assert "✓ Completado" in backups and "Programado" in backups and "Por fecha de solicitud" in backups
    assert "la programación diaria" in backups and "hecho antes de dar de baja la clínica" in backups
    backup = visible_text(pages["backup"])
    assert "Respaldo del " in backup and "— programado" in backup and "Solicitante: la programación diaria" in backup
    number = clinic_rows["scheduled"].pk
    assert f"hecho antes de restaurar un paciente desde el respaldo #{number}" in visible_text(pages["safety backup"])
    confirmation = visible_text(pages["restore confirmation"])
    assert "Vínculos entre facturas y tratamientos" in confirmation and "Neto" in confirmation
    undo = visible_text(pages["undo confirmation"])
    assert f"¿Deshacer la restauración #{clinic_rows['restore'].pk}?" in undo
    assert "hecho antes de dar de baja la clínica" in undo
    assert "✓ Completada" in visible_text(pages["restore history"])  # a restore is feminine
    audit = visible_text(pages["audit trail"])
    assert "el sistema" in audit and "la programación diaria" in audit
    clinics = visible_text(pages["platform clinics"])
    assert "Esquema" in clinics and "✓ activados" in clinics and "hace un momento" in clinics
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC"  # the platform's times name their zone
    for name in ("platform clinics", "platform backups", "platform restores", "platform audit trail"):
        assert re.search(stamp, visible_text(pages[name])), name
    assert "la programación diaria" in visible_text(pages["platform backups"])
    assert "el sistema" in visible_text(pages["platform audit trail"])


def test_a_backups_email_names_the_schedule_and_its_note_in_spanish(clinic_rows):
    from django.utils import translation

    from backups.operations.notify import backup_facts

    offboarding = fake_backup(requested_by="schedule", note="offboarding", succeeded_at=timezone.now())
    with translation.override("es"):
        facts = dict(backup_facts(offboarding))
    assert facts["Solicitante"] == "la programación diaria"
    assert facts["Nota"] == "hecho antes de dar de baja la clínica"
