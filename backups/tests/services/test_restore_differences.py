"""The restore confirmation says what restoring would remove, bring back and change, record by record.

Real backups of the scratch clinic ``restaura`` (pg and json payloads), real PostgreSQL; the
comparison the page asks for is run as a worker would run it (its django-q2 task), whatever the
broker, then the page and the API are read again.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backups.tests.api.openapi_check import check
from backups.tests.helpers import SCHEMA, api, change_the_clinic_since, logged_in, make_backup, make_token, schemas

LIST = "/admin/backups/backup/"


def run_queued_comparisons() -> int:
    """Run the comparisons the pages asked for and no worker has taken yet, as a worker would (the
    task the queue holds, ``backups.tasks.compare_backup``), whatever the broker (ORM or Redis); how many ran."""
    from backups.models import RestoreComparison
    from backups.tasks import compare_backup

    ran = 0
    waiting = RestoreComparison.objects.filter(status="pending", backup__clinic__schema_name=SCHEMA).order_by("pk")
    for comparison_id in waiting.values_list("pk", flat=True):
        ran += compare_backup(comparison_id) != "gone"
    connection.set_schema_to_public()
    return ran


def run_in_own_connection(function, *args) -> None:
    """Run ``function`` as a worker thread would, on its own database connection, closed after."""
    try:
        function(*args)
    finally:
        connection.close()


def figures(page: str, label: str) -> list[str]:
    """The cells of the confirmation's row ``label`` (now, in the backup, net, removed, brought back, changed)."""
    row = re.search(rf"<tr[^>]*><th scope=\"row\">{label}</th>(.*?)</tr>", page, re.S)
    assert row is not None, f"no row {label!r} on the page"
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_the_confirmation_and_the_api_say_what_a_net_zero_hides(jefa, payload_format):
    backup = make_backup(SCHEMA, payload_format)
    change_the_clinic_since(backup.pk)
    client = logged_in("jefa", "jefa-pass-1", host="restaura.localhost")
    url = f"{LIST}{backup.pk}/restore/"

    appointments = str(backup.manifest["tables"]["dental_appointment"])
    patients = str(backup.manifest["tables"]["dental_patient"])
    first = client.get(url).content.decode()
    assert figures(first, "Appointments")[:3] == [appointments, appointments, "0"]  # the net count: nothing to see
    assert run_queued_comparisons() == 1

    page = client.get(url).content.decode()
    assert run_queued_comparisons() == 1  # each visit compares again, with the clinic as it is then
    page = client.get(url).content.decode()  # shows the newest finished comparison meanwhile
    assert figures(page, "Appointments") == [appointments, appointments, "0", "1", "1", "0"]
    assert figures(page, "Patients") == [patients, patients, "0", "0", "0", "1"]
    assert figures(page, "Invoices")[3:] == ["0", "0", "0"]
    assert "Restore one patient…" in page and f"{LIST}{backup.pk}/pick/" in page

    preview = api(make_token(SCHEMA, "jefa"), host="restaura.localhost").get(f"/api/v1/backups/{backup.pk}/restore/")
    check(preview, "GET", f"/api/v1/backups/{backup.pk}/restore/")
    body = preview.json()
    by_table = {row["table"]: row for row in body["records"]}
    assert (by_table["dental_appointment"]["now"], by_table["dental_appointment"]["in_backup"]) == (60, 60)
    assert {k: by_table["dental_appointment"][k] for k in ("removed", "brought_back", "changed")} == {
        "removed": 1,
        "brought_back": 1,
        "changed": 0,
    }
    assert by_table["dental_patient"]["changed"] == 1 and by_table["dental_patient"]["removed"] == 0
    assert body["differences"]["totals"] == {"removed": 1, "brought_back": 1, "changed": 1}
    others = {row["table"]: row for row in body["others"]}
    if payload_format == "pg":  # the whole schema comes back: the session opened since is removed
        assert others["django_session"]["removed"] >= 1 and others["auth_user"]["changed"] == 1  # last_login
    else:  # a json restore leaves users and sessions alone: not compared
        assert others == {} or all(row["removed"] is None for row in others.values())
    assert not any(name.startswith(f"{SCHEMA}__diff_") for name in schemas())  # the scratch schema never stays


def test_a_comparison_never_holds_a_worker_that_a_restore_needs(scratch_clinic):
    """A comparison that finds a restore of the clinic waiting gives way at once; one that meets a lock
    on a live table gives up after a few seconds instead of waiting with the worker (a browser test
    hung when its only worker was stuck on a comparison behind a lock the restore test held)."""
    from backups.models import JobStatus, Restore, RestoreComparison
    from backups.services import differences
    from backups.tests.helpers import other_connection

    backup = make_backup(SCHEMA)
    waiting = Restore.objects.create(clinic=scratch_clinic, backup=backup, requested_by="admin")
    comparison = differences.request_comparison(backup, enqueue=False)
    differences.run_comparison(comparison.pk)
    comparison.refresh_from_db()
    assert comparison.status == JobStatus.FAILED and comparison.error_code == "clinic_busy"
    Restore.objects.filter(pk=waiting.pk).update(status=JobStatus.FAILED)

    with other_connection() as holder:
        holder.execute("BEGIN")
        holder.execute(f'LOCK TABLE "{SCHEMA}".dental_inventoryitem IN ACCESS EXCLUSIVE MODE')
        comparison = differences.request_comparison(backup, enqueue=False)
        worker = threading.Thread(target=run_in_own_connection, args=(differences.run_comparison, comparison.pk))
        worker.start()
        worker.join(timeout=60)  # without the lock timeout it waits as long as the lock is held
        stuck = worker.is_alive()
        holder.execute("ROLLBACK")
        worker.join()
    assert not stuck, "the comparison waited on the lock"
    comparison.refresh_from_db()
    assert comparison.status == JobStatus.FAILED
    assert not RestoreComparison.objects.filter(pk=comparison.pk, status__in=["pending", "running"]).exists()
    assert not [name for name in schemas() if differences.SCRATCH_INFIX in name]


def test_a_comparison_whose_worker_died_is_settled_by_the_sweeper(scratch_clinic, settings):
    """A comparison still running long after its worker's time-out is failed by the sweeper (the page then
    asks for a new one); a recent one is left alone."""
    from backups.models import JobStatus, RestoreComparison
    from backups.services import differences
    from backups.tasks import sweep_stale_jobs

    settings.BACKUPS_STALE_AFTER_SECONDS = 600
    backup = make_backup(SCHEMA)
    dead = differences.request_comparison(backup, enqueue=False)
    RestoreComparison.objects.filter(pk=dead.pk).update(
        status=JobStatus.RUNNING, requested_at=timezone.now() - timedelta(hours=1)
    )
    assert sweep_stale_jobs() >= 1
    dead.refresh_from_db()
    assert dead.status == JobStatus.FAILED and "compare anew" in dead.error_message()
    recent = differences.request_comparison(backup, enqueue=False)
    assert differences.comparison_sweep_stale() == []
    assert RestoreComparison.objects.get(pk=recent.pk).status == JobStatus.PENDING
