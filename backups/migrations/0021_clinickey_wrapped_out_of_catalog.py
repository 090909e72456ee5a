"""The clinic archive keys leave the catalog: ``ClinicKey.wrapped`` is dropped (issue 25).

Crypto-erasure must destroy every copy of a clinic's key that we hold, and a PostgreSQL row
cannot be destroyed: what it held stays in the table's dead tuples until vacuumed, in the
write-ahead log, on replicas and in every backup of the database. From now on the wrapped key
lives only in the backup storage object ``keys/<schema>/<clinic id>-<key id>.age``.

1. Each live key's object is written from the column when the storage lacks it (it is there
   since the key was created, unless someone removed it), so dropping the column loses nothing.
2. The column is dropped.
3. ``VACUUM FULL`` rewrites the table: ``DROP COLUMN`` only hides a column, its bytes stay in
   the table's pages (and an erased key's older row versions in dead tuples) until a rewrite.
   The migration is therefore not atomic (VACUUM cannot run in a transaction).

Out of this migration's reach, said in the README's security notes: WAL segments written
before it (archived WAL, replicas' WAL) and database backups or snapshots taken before it still
hold the wrapped keys that were in the column, erased ones included; expire them on the usual
schedule, and treat them as holding key material until then.

Reversing re-adds the column empty (the keys stay in storage only).
"""

import base64

from django.db import migrations


def wrapped_keys_to_storage(apps, schema_editor) -> None:
    """Write each live key's wrapped copy to the storage object if that object is missing."""
    ClinicKey = apps.get_model("backups", "ClinicKey")
    rows = list(ClinicKey.objects.filter(erased_at__isnull=True).exclude(wrapped="").select_related("clinic"))
    if not rows:  # nothing to move: the storage is not touched (a new deployment, the test database)
        return
    from backups import archive, storage

    backend = storage.backup_storage()
    for row in rows:
        key_id = archive.key_id(row.public_key)
        name = f"keys/{row.clinic.schema_name}/{row.clinic_id}-{key_id}.age"
        if not backend.exists(name):
            storage.store_bytes(name, base64.b64decode(row.wrapped))


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("backups", "0020_platform_page_indexes"),
    ]

    operations = [
        migrations.RunPython(wrapped_keys_to_storage, migrations.RunPython.noop, atomic=True),
        migrations.RemoveField(model_name="clinickey", name="wrapped"),
        migrations.RunSQL("VACUUM FULL backups_clinickey", migrations.RunSQL.noop),
    ]
