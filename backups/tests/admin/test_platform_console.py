"""The platform console: the overview on the platform's index and the clinics list with their backup health.

Clinics here are catalog rows only (``bulk_create``: no schema, no domain), which is all the
overview and the list read; every test runs in a transaction that is rolled back.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups.models import Backup, BackupPolicy, JobStatus, Restore
from backups.selectors.platform import clinics_with_health, platform_clinics, platform_overview
from backups.tests import catalog_fill
from backups.tests.helpers import platform_admin
from clinics.models import Clinic

pytestmark = pytest.mark.django_db
CLINICS = "/admin/clinics/clinic/"
MB = 1024 * 1024


def clinic(schema: str, *, age: timedelta = timedelta(days=30), enabled: bool = True) -> Clinic:
    """A catalog-only clinic created ``age`` ago, with a policy (26 hours threshold)."""
    (made,) = Clinic.objects.bulk_create([Clinic(schema_name=schema, name=f"Clínica {schema}")])
    Clinic.objects.filter(pk=made.pk).update(created_at=timezone.now() - age)
    BackupPolicy.objects.create(clinic=made, enabled=enabled)
    made.refresh_from_db()
    return made


def backup(of: Clinic, *, ago: timedelta, status: str = JobStatus.SUCCEEDED, size: int = MB, **fields) -> Backup:
    """A finished catalog row ``ago`` in the past (stored when it succeeded)."""
    when = timezone.now() - ago
    ended = {"succeeded_at": when} if status == JobStatus.SUCCEEDED else {"failed_at": when}
    stored = {"storage_name": f"clinics/{of.schema_name}/{when:%Y%m%d%H%M%S}.age", "size": size}
    return Backup.objects.create(
        clinic=of,
        status=status,
        requested_at=when - timedelta(minutes=1),
        started_at=when - timedelta(minutes=1),
        **ended,
        **(stored if status == JobStatus.SUCCEEDED else {}),
        **fields,
    )


@pytest.fixture
def fleet():
    """A healthy, a failed, a stale, a drill-failed clinic and one with daily backups off."""
    healthy = clinic("sana")
    backup(healthy, ago=timedelta(hours=2), size=3 * MB, verified_at=timezone.now(), drilled_at=timezone.now())
    failed = clinic("fallida")
    backup(failed, ago=timedelta(hours=20), drilled_at=timezone.now(), drill_status="succeeded")
    backup(failed, ago=timedelta(hours=1), status=JobStatus.FAILED)
    stale = clinic("atrasada", age=timedelta(days=3))
    backup(stale, ago=timedelta(hours=40), size=5 * MB, drilled_at=timezone.now())
    drill = clinic("simulacro")
    backup(drill, ago=timedelta(hours=3), drilled_at=timezone.now(), drill_status="failed", size=2 * MB)
    backup(drill, ago=timedelta(hours=30), drilled_at=timezone.now() - timedelta(days=1), drill_status="succeeded")
    off = clinic("apagada", enabled=False)
    return {"healthy": healthy, "failed": failed, "stale": stale, "drill": drill, "off": off}


def names(response) -> set[str]:
    """Schema names of the clinics a changelist response shows."""
    return {row.schema_name for row in response.context["cl"].result_list}


def test_the_overview_counts_failed_stale_and_undrilled_clinics(fleet):
    overview = platform_overview()
    annotated = {c.schema_name: c for c in clinics_with_health(platform_clinics())}
    assert annotated["fallida"].failed_recently and annotated["fallida"].last_status == JobStatus.FAILED
    assert annotated["atrasada"].is_stale and not annotated["sana"].is_stale
    assert not annotated["apagada"].is_stale  # daily backups off: nothing is expected of it
    assert annotated["simulacro"].drill_overdue and annotated["apagada"].drill_overdue  # never drilled, 30 days
    assert not annotated["sana"].drill_overdue and not annotated["fallida"].drill_overdue

    stale = sum(1 for c in annotated.values() if c.is_stale)
    assert overview.failed_backups >= 1 and overview.failing_clinics >= 1 and overview.stale_clinics == stale
    sizes = {big.schema_name: big.stored_size for big in overview.biggest}
    assert sizes["atrasada"] == 5 * MB and sizes["sana"] == 3 * MB and sizes["simulacro"] == 3 * MB
    assert overview.stored_size >= 12 * MB


def test_each_number_of_the_overview_links_to_the_clinics_behind_it(fleet):
    client = platform_admin()
    page = client.get("/admin/")
    html = page.content.decode()
    assert page.status_code == 200 and page.context["overview"].stale_clinics >= 1
    assert "Backups of every clinic" in html and "clinics past their backup threshold" in html
    assert 'id="app-list"' in html or "app-clinics" in html  # the app list is still there
    links = {"?failed=24h": "fallida", "?stale=yes": "atrasada", "?drill=overdue": "simulacro"}
    for query, schema in links.items():
        assert f'href="{CLINICS}{query}"' in html
        shown = names(client.get(CLINICS + query))
        assert schema in shown and "sana" not in shown, query
    sort = client.get(f"{CLINICS}?{page.context['by_size_query']}")
    order = [row.schema_name for row in sort.context["cl"].result_list]
    assert order.index("atrasada") < order.index("sana") < order.index("fallida")
    assert f'href="{CLINICS}?q=atrasada"' in html


def test_the_overview_speaks_spanish(fleet):
    client = platform_admin()
    html = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "Respaldos de todas las clínicas" in html and "almacenado en total" in html
    assert "clínicas han superado su plazo sin respaldo" in html or "clínica ha superado su plazo sin respaldo" in html
    clinics = client.get(CLINICS + "?stale=yes", HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "vencido" in clinics and "Último respaldo bueno" in clinics and "hace 1\xa0día" in clinics


def test_the_clinics_list_shows_each_clinics_backup_health(fleet):
    client = platform_admin()
    html = client.get(CLINICS + "?q=atrasada").content.decode()
    assert "⚠" in html and "overdue" in html and "respaldo-stale" in html  # a word and a symbol, not only colour
    assert "5.0\xa0MB" in html and "✓ on" in html
    html = client.get(CLINICS + "?q=apagada").content.decode()
    assert "✗ off" in html and "never" in html
    html = client.get(CLINICS + "?q=fallida").content.decode()
    assert "respaldo-badge respaldo-failed" in html and "Failed" in html
    assert "respaldo-stale" not in client.get(CLINICS + "?q=sana").content.decode()


@pytest.mark.parametrize(
    ("query", "inside", "outside"),
    [
        ("stale=yes", {"atrasada"}, {"sana", "apagada"}),
        ("stale=no", {"sana", "apagada", "fallida"}, {"atrasada"}),
        ("last_status=failed", {"fallida"}, {"sana", "atrasada"}),
        ("last_status=succeeded", {"sana", "atrasada", "simulacro"}, {"fallida", "apagada"}),
        ("last_status=none", {"apagada"}, {"sana"}),
        ("policy=off", {"apagada"}, {"sana", "atrasada"}),
        ("policy=on", {"sana", "atrasada"}, {"apagada"}),
        ("failed=24h", {"fallida"}, {"sana", "atrasada"}),
        ("drill=overdue", {"simulacro", "apagada"}, {"sana", "fallida"}),
    ],
)
def test_the_clinics_list_filters_on_backup_health(fleet, query, inside, outside):
    shown = names(platform_admin().get(f"{CLINICS}?{query}"))
    assert inside <= shown and not (outside & shown)


def test_the_clinics_list_sorts_on_backup_health(fleet):
    client = platform_admin()
    admin = client.get(CLINICS).context["cl"].model_admin
    for column, key in [("stored_size_display", "stored_size"), ("last_success_display", "last_success_at")]:
        rows = client.get(f"{CLINICS}?{admin.sort_query(column, descending=False)}").context["cl"].result_list
        values = [getattr(row, key) for row in rows if getattr(row, key) is not None]
        assert values == sorted(values), column


def test_back_up_selected_now_asks_first_then_queues_and_reports_refusals(fleet):
    client = platform_admin()
    busy = fleet["off"]
    Backup.objects.create(clinic=busy, status=JobStatus.PENDING)
    action = {"action": "backup_selected", "_selected_action": [fleet["stale"].pk, busy.pk]}
    page = client.post(CLINICS, action)
    assert page.status_code == 200 and "Back up these clinics now?" in page.content.decode()
    assert not Backup.objects.filter(clinic=fleet["stale"], status=JobStatus.PENDING).exists()

    done = client.post(CLINICS, {**action, "post": "yes"}, follow=True)
    queued = Backup.objects.get(clinic=fleet["stale"], status=JobStatus.PENDING)
    assert queued.requested_by == "superadmin" and queued.kind == Backup.Kind.MANUAL
    said = [str(message) for message in done.context["messages"]]
    assert "Backups queued for: Clínica atrasada." in said
    assert any(m.startswith("Clínica apagada:") and "already has backup" in m for m in said)
    assert "last_status=pending" not in said  # (nothing else was said)
    row = {c.schema_name: c for c in done.context["cl"].result_list}["atrasada"]
    assert row.last_status == JobStatus.PENDING


def test_drill_selected_now_asks_first_then_queues_and_reports_refusals(fleet):
    client = platform_admin()
    action = {"action": "drill_selected", "_selected_action": [fleet["stale"].pk, fleet["off"].pk]}
    page = client.post(CLINICS, action)
    assert page.status_code == 200 and "Drill these clinics now?" in page.content.decode()
    assert not Backup.objects.filter(clinic=fleet["stale"], drill_requested_at__isnull=False).exists()

    done = client.post(CLINICS, {**action, "post": "yes"}, follow=True)
    asked = Backup.objects.get(clinic=fleet["stale"], drill_requested_at__isnull=False)
    assert asked.status == JobStatus.SUCCEEDED and asked.storage_name
    said = [str(message) for message in done.context["messages"]]
    assert "Drills queued for: Clínica atrasada." in said
    assert any(m.startswith("Clínica apagada:") and "no stored backup" in m for m in said)
    again = client.post(CLINICS, {**action, "post": "yes"}, follow=True)
    assert any("already waiting" in str(m) for m in again.context["messages"])


def test_a_failed_restore_counts_as_a_failure_of_the_last_24_hours(fleet):
    before = platform_overview()
    source = Backup.objects.filter(clinic=fleet["healthy"]).first()
    Restore.objects.create(
        clinic=fleet["healthy"], backup=source, status=JobStatus.FAILED, failed_at=timezone.now() - timedelta(hours=2)
    )
    after = platform_overview()
    assert after.failed_restores == before.failed_restores + 1 and after.failures == before.failures + 1
    assert "sana" in names(platform_admin().get(CLINICS + "?failed=24h"))


# --- Query budget: 1,000 clinics and 100,000 catalog rows ---------------------------------

BUDGET_CLINICS = 1_000
BACKUPS_EACH = 100
MAX_QUERIES = 15


def fill_catalog() -> None:
    """1,000 catalog-only clinics with a policy each and 100 backups each (one in ten failed)."""
    catalog_fill.fill_catalog(clinics=BUDGET_CLINICS, backups_each=BACKUPS_EACH)
    assert Backup.objects.filter(clinic__schema_name__startswith="budget_").count() == BUDGET_CLINICS * BACKUPS_EACH


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        CLINICS,
        CLINICS + "?stale=yes",
        CLINICS + "?failed=24h&o=-7",
        CLINICS + "?drill=overdue&policy=on",
        "/admin/backups/backup/",
        "/admin/backups/backup/?status__exact=failed&o=-1",
        "/admin/backups/restore/",
        "/admin/backups/clonejob/",
    ],
)
def test_the_console_runs_a_bounded_number_of_queries(path):
    """No query per clinic or per row. django-tenants sends ``SET search_path`` before every query
    (its ``TENANT_LIMIT_SET_CALLS`` is off): those are counted apart, the budget is for the others.
    How long the pages take is measured in bench/, not here.
    """
    fill_catalog()
    client = platform_admin()
    client.get(path)  # warm caches (content types, permissions) that any page pays once
    with CaptureQueriesContext(connection) as captured:
        page = client.get(path)
    assert page.status_code == 200
    queries = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SET search_path")]
    assert len(queries) <= MAX_QUERIES, "\n".join(sql[:150] for sql in queries)
    assert len(captured.captured_queries) <= 2 * MAX_QUERIES
