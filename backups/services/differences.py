"""What restoring a backup would remove, bring back and change, record by record.

The confirmation page's row counts are net: deleting one appointment and adding another
reads "0", and an edited record never shows. This compares the backup with the live clinic
by primary key instead:

* **removed**: rows in the clinic now that the backup does not have (added since it);
* **brought back**: rows of the backup the clinic no longer has (deleted since);
* **changed**: rows in both whose values differ (edited since).

How. The backup is verified and restored into a scratch schema ``<clinic>__diff_<id>`` inside
a transaction that is always rolled back (as drills and the selective restore do, see
:meth:`backups.formats.base.Format.into_scratch`); then, per table, in that same transaction, one
``FULL OUTER JOIN`` of the scratch table and the live table on the primary key, comparing
the columns both have as one text value (``ROW(...)::text``, same session so same settings:
exact, no hash). Tables only in the backup are brought back whole, tables only in the
clinic removed whole (pg payloads; a json restore leaves the other tables alone).

Cost: the restore into scratch is a drill's (seconds for a clinic of a million rows), so
it runs in a worker (``backups.tasks.compare_backup``) and the page shows it when ready.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from backups import jobs
from backups.conf import conf
from backups.exceptions import ClinicBusy, RespaldoError, RestoreRefused
from backups.formats import format_for
from backups.formats.base import quote_ident
from backups.formats.json.payload import payload_models
from backups.keys.clinic import reading_identities
from backups.models import ACTIVE_STATUSES, Backup, JobStatus, Restore, RestoreComparison
from backups.postgres import SCHEMA_TABLES
from backups.services.selective_rows import picks, read_settings, table_name
from backups.services.verification import check_migrations, verified_copy

logger = logging.getLogger(__name__)

SCRATCH_INFIX = "__diff_"
LOCK_TIMEOUT_MS = 3000  # how long a comparison waits for a lock on a live table before it gives up
FEW = 20  # at most this many differing records: "Restore one patient…" is offered instead
REUSE_ACTIVE_FOR = timedelta(minutes=10)  # a comparison still pending or running this long is reused
RECENT_ENOUGH = timedelta(seconds=60)  # the API compares again when the newest result is older
KINDS = ("removed", "brought_back", "changed")


@dataclass(frozen=True)
class TableDiff:
    """One table: rows the restore would remove, bring back and change (with the first ids of each)."""

    removed: int = 0
    brought_back: int = 0
    changed: int = 0
    ids: dict[str, list] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.removed + self.brought_back + self.changed

    def as_json(self) -> dict[str, int]:
        return {"removed": self.removed, "brought_back": self.brought_back, "changed": self.changed}


# --- Comparing two schemas (any DB-API cursor: psycopg's own or Django's) ----------------


def _fetchall(cursor: Any, query: str, params: Any = None) -> list[tuple]:
    cursor.execute(query, params)
    return cursor.fetchall()


def _tables(cursor: Any, schema: str) -> set[str]:
    rows = _fetchall(cursor, SCHEMA_TABLES, {"schema": schema})
    return {name for (name,) in rows}


def _columns(cursor: Any, schema: str, table: str) -> list[str]:
    rows = _fetchall(
        cursor,
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table_name(schema, table)],
    )
    return [name for (name,) in rows]


def _primary_key(cursor: Any, schema: str, table: str) -> list[str]:
    rows = _fetchall(
        cursor,
        "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        [table_name(schema, table)],
    )
    return [name for (name,) in rows]


def _count(cursor: Any, schema: str, table: str) -> int:
    return _fetchall(cursor, f"SELECT count(*) FROM {table_name(schema, table)}")[0][0]  # noqa: S608


def compare_table(cursor: Any, *, backup_schema: str, live_schema: str, table: str) -> TableDiff | None:
    """The rows of ``table`` that differ between the two schemas, by primary key (None: no primary key)."""
    key = _primary_key(cursor, live_schema, table)
    if not key or key != _primary_key(cursor, backup_schema, table):
        return None
    live_columns = set(_columns(cursor, live_schema, table))
    common = [c for c in _columns(cursor, backup_schema, table) if c in live_columns]
    on = " AND ".join(f"b.{c} = l.{c}" for c in map(quote_ident, key))
    first = quote_ident(key[0])
    b_row = "ROW(" + ", ".join(f"b.{quote_ident(c)}" for c in common) + ")::text"
    l_row = "ROW(" + ", ".join(f"l.{quote_ident(c)}" for c in common) + ")::text"
    ident = (
        f"COALESCE(b.{first}, l.{first})"
        if len(key) == 1
        else "jsonb_build_array(" + ", ".join(f"COALESCE(b.{c}, l.{c})" for c in map(quote_ident, key)) + ")"
    )
    query = f"""
        SELECT kind, count(*), (array_agg(id ORDER BY id))[1:{FEW + 1}] FROM (
            SELECT CASE WHEN b.{first} IS NULL THEN 'removed'
                        WHEN l.{first} IS NULL THEN 'brought_back' ELSE 'changed' END AS kind,
                   {ident} AS id
            FROM {table_name(backup_schema, table)} b FULL OUTER JOIN {table_name(live_schema, table)} l ON {on}
            WHERE b.{first} IS NULL OR l.{first} IS NULL OR {b_row} IS DISTINCT FROM {l_row}
        ) d GROUP BY kind
    """  # noqa: S608 (names quoted, from the catalog)
    found = {kind: (count, ids) for kind, count, ids in _fetchall(cursor, query)}
    return TableDiff(
        **{kind: found.get(kind, (0, []))[0] for kind in KINDS},
        ids={kind: list(found[kind][1]) for kind in found},
    )


def compare_schemas(
    cursor: Any, *, backup_schema: str, live_schema: str, whole_schema: bool
) -> dict[str, TableDiff | None]:
    """Per table, what restoring ``backup_schema`` over ``live_schema`` would do.

    ``whole_schema``: the restore replaces every table (pg); otherwise only the tables the
    backup holds (json), and the clinic's other tables are left out.
    """
    read_settings(cursor)
    # a comparison is only advice: it never queues behind a lock on the clinic's tables (a restore's
    # swap, a long transaction), which would hold a worker that a backup or restore is waiting for
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{LOCK_TIMEOUT_MS}ms"])
    in_backup = _tables(cursor, backup_schema)
    live = _tables(cursor, live_schema)
    diffs: dict[str, TableDiff | None] = {}
    for table in sorted(in_backup | (live if whole_schema else set())):
        if table not in live:
            diffs[table] = TableDiff(brought_back=_count(cursor, backup_schema, table))
        elif table not in in_backup:
            diffs[table] = TableDiff(removed=_count(cursor, live_schema, table))
        else:
            diffs[table] = compare_table(cursor, backup_schema=backup_schema, live_schema=live_schema, table=table)
    return diffs


def patients_to_pick(cursor: Any, backup_schema: str, diffs: dict[str, TableDiff | None]) -> list[str] | None:
    """National ids of the patients whose records the restore would bring back or change (as in
    the backup), or None when some such record is not one a selective restore puts back."""
    chain = {pick.table: pick for pick in picks()}
    patient_table = picks()[0].table
    record_tables = {model._meta.db_table for model in payload_models()}
    patient_ids: set[int] = set()
    for table, diff in diffs.items():
        if table not in record_tables or diff is None:
            continue
        rows = diff.ids.get("brought_back", []) + diff.ids.get("changed", [])
        if not rows:
            continue
        if table not in chain:
            return None  # a dentist, a material...: not part of one patient's records
        pick, ids = chain[table], rows
        while pick.parent is not None:
            parents = _fetchall(
                cursor,
                f"SELECT DISTINCT {quote_ident(pick.column)} FROM {table_name(backup_schema, pick.table)} "  # noqa: S608
                "WHERE id = ANY(%s)",
                [ids],
            )
            ids = [value for (value,) in parents if value is not None]
            pick = chain[pick.parent._meta.db_table]
        patient_ids.update(ids)
    if not patient_ids:
        return []
    rows = _fetchall(
        cursor,
        f"SELECT national_id FROM {table_name(backup_schema, patient_table)} WHERE id = ANY(%s) ORDER BY 1",  # noqa: S608
        [sorted(patient_ids)],
    )
    return [national_id for (national_id,) in rows]


# --- Reading the backup: restored into a scratch schema, compared, rolled back -------------


def _summary(cursor: Any, backup_schema: str, live_schema: str, *, whole_schema: bool) -> dict[str, Any]:
    diffs = compare_schemas(cursor, backup_schema=backup_schema, live_schema=live_schema, whole_schema=whole_schema)
    records = {model._meta.db_table for model in payload_models()}
    differing = sum(diff.total for table, diff in diffs.items() if table in records and diff is not None)
    patients = patients_to_pick(cursor, backup_schema, diffs) if differing <= FEW else None
    return {
        "tables": {table: diff.as_json() if diff is not None else None for table, diff in diffs.items()},
        "records_differing": differing,
        "patients": patients,
    }


def compute_differences(backup: Backup, *, scratch: str | None = None) -> dict[str, Any]:
    """What restoring ``backup`` now would remove, bring back and change, per table (see the module).

    Returns ``{"tables": {table: {"removed", "brought_back", "changed"} or None}, "records_differing":
    n, "patients": [national ids] or None, "seconds": s}``; ``patients`` is None when more than
    :data:`FEW` records differ or some are not one patient's. ``scratch``: the scratch schema's name.
    """
    if backup.status != JobStatus.SUCCEEDED or backup.expired_at or not backup.storage_name:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status=backup.get_status_display())
    started = time.monotonic()
    schema = scratch or f"{backup.clinic.schema_name}{SCRATCH_INFIX}{backup.pk}"
    with verified_copy(backup, backup.clinic) as (manifest, copy):
        check_migrations(manifest.get("migrations") or {})
        payload_format = format_for(manifest["payload_format"])
        live, app_name = backup.clinic.schema_name, f"respaldo-diff-{backup.pk}"
        with (
            copy.open(reading_identities(backup.clinic)) as payload,
            payload_format.into_scratch(backup, payload, manifest, schema=schema, app_name=app_name) as cursor,
        ):
            # a pg restore replaces the whole schema; a json one only the tables the backup holds
            found = _summary(cursor, schema, live, whole_schema=payload_format.carries_schema)
    found["seconds"] = round(time.monotonic() - started, 3)
    return found


# --- The job: requested by the confirmation page (or the API), run by a worker ------------


def request_comparison(backup: Backup, *, requested_by: str = "", enqueue: bool = True) -> RestoreComparison:
    """A comparison of ``backup`` with the clinic now: one still waiting or running is reused.

    Older finished comparisons of the backup are deleted, except the newest (shown meanwhile).
    """
    recent = timezone.now() - REUSE_ACTIVE_FOR
    active = backup.comparisons.filter(status__in=ACTIVE_STATUSES, requested_at__gte=recent).first()
    if active is not None:
        return active
    with transaction.atomic():
        newest = latest_comparison(backup)
        old = backup.comparisons.exclude(pk=newest.pk) if newest else backup.comparisons.all()
        old.exclude(status__in=ACTIVE_STATUSES, requested_at__gte=recent).delete()
        comparison = RestoreComparison.objects.create(
            clinic_id=backup.clinic_id, backup=backup, requested_by=requested_by
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue(comparison.pk))
    return comparison


def _enqueue(comparison_id: int) -> None:
    from django_q.tasks import async_task

    async_task("backups.tasks.compare_backup", comparison_id, task_name=f"compare-{comparison_id}", group="compare")


def latest_comparison(backup: Backup) -> RestoreComparison | None:
    """The newest finished comparison of ``backup`` that succeeded, or None."""
    return backup.comparisons.filter(status=JobStatus.SUCCEEDED).order_by("-succeeded_at", "-id").first()


def comparison_for_api(backup: Backup, *, requested_by: str = "") -> RestoreComparison | None:
    """The comparison an API read waits for: a new one unless one is under way or one finished
    less than :data:`RECENT_ENOUGH` ago (then None), so that a polling client does not queue
    a comparison at every read."""
    newest = latest_comparison(backup)
    if newest is not None and newest.succeeded_at >= timezone.now() - RECENT_ENOUGH:
        active = backup.comparisons.filter(status__in=ACTIVE_STATUSES, requested_at__gte=newest.requested_at)
        return active.first()
    return request_comparison(backup, requested_by=requested_by)


def comparison_sweep_stale(now: datetime | None = None) -> list[int]:
    """Fail the comparisons whose worker died (still waiting or running after
    ``BACKUPS_STALE_AFTER_SECONDS``), so that the page asks for a new one; their ids.

    A comparison writes nothing outside its own rolled-back transaction: nothing else to undo.
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=conf.stale_after_seconds)
    stale = list(
        RestoreComparison.objects.filter(status__in=ACTIVE_STATUSES, requested_at__lte=cutoff).values_list(
            "pk", flat=True
        )
    )
    reason = RespaldoError("interrupted", "interrupted_comparison")
    return [pk for pk in stale if jobs.fail(RestoreComparison, pk, reason)]


def run_comparison(comparison_id: int) -> RestoreComparison | None:
    """Run one requested comparison (the worker's side); a failure is recorded, never raised.

    None: the row is gone (its backup was deleted meanwhile)."""
    if not RestoreComparison.objects.filter(pk=comparison_id).exists():
        return None

    def execute() -> None:
        comparison = RestoreComparison.objects.select_related("backup__clinic").get(pk=comparison_id)
        clinic = comparison.backup.clinic
        restoring = Restore.objects.filter(clinic_id=clinic.pk, status__in=ACTIVE_STATUSES).first()
        if restoring is not None:  # the restore goes first: its result makes this comparison moot
            raise ClinicBusy("clinic_busy", "clinic_busy_restore", clinic=clinic.schema_name, restore=restoring.pk)
        scratch = f"{clinic.schema_name}{SCRATCH_INFIX}{comparison.pk}"
        jobs.succeed(RestoreComparison, comparison_id, result=compute_differences(comparison.backup, scratch=scratch))

    # Read-only work: no lock (a comparison never waits for, nor blocks, a backup or a restore).
    # A failure is recorded on the row (the page says why), never raised.
    return jobs.run(
        RestoreComparison,
        comparison_id,
        lock=contextlib.nullcontext(True),
        phase=RestoreComparison.Phase.COMPARING,
        execute=execute,
        label="Comparison",
        log=logger,
    )
