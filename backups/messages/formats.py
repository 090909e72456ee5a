"""The sentences of the json payload format's complaints (backups/formats/json/), by message id.

``JsonPayloadError("json.…", **params)`` keeps the id and its parameters; a service shows it
as the detail of "json_payload". Every sentence ends with a full stop, so that
"json.nothing_restored" can follow it with another one (``backups/tests/test_messages.py``).
The ``json.reason.*`` texts fill %(reason)s of "json.invalid_record".
"""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
    # writing or reading the payload (payload.py)
    "json.field_type": _("%(field)s: fields of type %(type)s cannot be kept in the json backup format."),
    "json.line_too_long": _("Line %(line)d of the backup is longer than %(limit)d bytes."),
    "json.truncated": _("The backup's data ends too early: the file is incomplete (truncated or damaged)."),
    "json.line_not_json": _("Line %(line)d of the backup is not valid JSON: %(error)s."),
    "json.line_not_record": _(
        'Line %(line)d of the backup is not a record {"model": ..., "pk": ..., "fields": {...}}.'
    ),
    "json.line_bad_list": _("Line %(line)d of the backup has an invalid “%(key)s” list."),
    "json.record_after_comma": _("Line %(line)d: a record was expected after the comma."),
    "json.single_object": _("The backup's data is a single JSON object, not a list of records."),
    "json.not_a_list": _("The backup's data does not start with a list of records (“[”)."),
    "json.missing_comma": _("Line %(line)d: records must be separated by commas (the record before has none)."),
    "json.data_after_end": _("Line %(line)d: unexpected data after the end of the records."),
    "json.line_not_utf8": _("Line %(line)d of the backup is not UTF-8 text."),
    "json.empty": _("The backup's data is empty."),
    # loading it (load.py)
    "json.invalid_record": _("The backup has an invalid record (%(where)s): %(reason)s."),
    "json.reason.no_pk": _("a record without a primary key cannot be restored"),
    "json.reason.unknown_fields": _("unknown fields: %(fields)s"),
    "json.reason.field_missing": _("the field is missing"),
    "json.unknown_model": _("The backup holds records of an unknown model “%(model)s”."),
    "json.not_clinic_model": _(
        "The backup holds records of “%(model)s”: a json restore replaces only the clinic's records (%(apps)s)."
    ),
    "json.database_refused": _("The database refused the backup's data: %(reason)s."),
    "json.public_schema": _("A json backup is restored into a clinic's schema, never the public one."),
    "json.nothing_restored": _("%(reason)s Nothing was restored."),
    "json.row_counts": _("The restored row counts differ from the backup's manifest (%(tables)s)."),
}
