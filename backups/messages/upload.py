"""The sentences of upload refusals (backups/services/upload.py), by message id, for ``backups.messages.MESSAGES``.

Marked for makemessages, translated only by ``backups.messages.render()``. A refusal keeps its
message id and parameters; a parameter may itself be a message (``{"message_id": ...,
"params": ...}``): the reason inside "field “x”: ...", the JSON parser's complaint, the kind
of value expected or found.

The English texts are the msgids of locale/*/django.po: change one only together with its
translations. The ``upload.django.*`` texts are Django's own (model fields' ``to_python()``
and validators), kept byte-identical so that Django's catalogs translate them. The few texts
not marked (``upload.text``...) hold nothing to translate.
"""

from django.utils.translation import gettext_noop as _

UPLOAD_MESSAGES: dict[str, str] = {
    # --- the file as a whole
    "upload.too_large": _("The file is larger than the %(limit)s limit."),
    "upload.empty": _("The file is empty."),
    "upload.pg_dump": _(
        "This is a raw pg_dump file. For safety, Respaldo never runs database dumps uploaded by a clinic; "
        "upload a backup downloaded from Respaldo instead."
    ),
    "upload.not_utf8.utf16": _(
        "The file is UTF-16 text (as Windows PowerShell saves command output); a JSON export must be "
        "UTF-8 text. Export it again with “manage.py dumpdata dental --indent 2 -o export.json”."
    ),
    "upload.not_utf8.byte": _(
        "The file is not UTF-8 text: byte %(byte)d (0x%(value)02X, on line %(line)d) is not valid UTF-8. "
        "It may be saved in another encoding, such as Latin-1 or Windows-1252; export it again as UTF-8."
    ),
    "upload.sql": _(
        "This is an SQL script. For safety, Respaldo never runs SQL uploaded by a clinic; upload a backup "
        "downloaded from Respaldo, or a JSON export of the clinic's records, instead."
    ),
    "upload.compressed": _(
        "This is a compressed file (%(format)s); upload the backup file itself, not a compressed copy."
    ),
    "upload.not_recognized": _("This file is not a Respaldo backup or a JSON export of clinic records."),
    # --- an archive
    "upload.wrong_key": _(
        "This backup was not made by this Respaldo installation (or was made with a key it no longer has). "
        "If the platform was rebuilt from its backup storage, the operator must first run "
        "python manage.py import_backups: it brings back the clinics' archive keys."
    ),
    "upload.altered": _("The file has been altered since it was made."),
    "upload.unpacked_too_large": _(
        "This backup unpacks to more than the uncompressed size limit (%(limit)s): it was refused without "
        "unpacking it (a file built to explode when unpacked looks like this)."
    ),
    "upload.damaged": _(
        "The file is damaged or incomplete (%(detail)s). It may have been cut short or changed while "
        "being downloaded or copied; upload the original file again."
    ),
    "upload.unsupported_format.version": _(
        "This backup was made by another version of Respaldo (backup format %(version)s); this "
        "installation reads format %(ours)d and cannot restore it."
    ),
    "upload.unsupported_format.payload": _(
        "This backup holds its data in a format this installation does not know (%(format)s)."
    ),
    "upload.other_clinic.schema": _(
        "This backup belongs to another clinic (%(schema)s); a clinic can only restore its own backups."
    ),
    "upload.other_clinic.id": _(
        "This backup was made for the clinic %(schema)s when its internal id was %(old_id)s; the clinic "
        "named %(schema)s here has id %(new_id)d. The platform was rebuilt or the clinic was deleted and "
        "created again, so the backup may hold the data of another clinic that had the same name: it is "
        "refused. If it really is this clinic's data, ask the platform operator: %(what_to_do)s"
    ),
    # %(what_to_do)s of upload.other_clinic.id, for a json backup / a pg backup
    "upload.other_clinic.id.json": _(
        "they hold the key to open it, and can take out its records (docs/archive-format.md, “Opening an "
        "archive by hand”) for you to upload here as a JSON export."
    ),
    "upload.other_clinic.id.pg": _(
        "they hold the key to open it and can restore it by hand (docs/archive-format.md, “Opening an "
        "archive by hand”)."
    ),
    "upload.stored_copy_differs": _(
        "The stored copy of the uploaded backup differs from the checked file; nothing was kept."
    ),
    # --- a JSON export: the file
    "upload.invalid_json": _("The file is not valid JSON: %(error)s at line %(line)d, column %(column)d."),
    "upload.invalid_json.incomplete": _(
        "The file is not valid JSON: it ends in the middle of the list of records, so it is incomplete "
        "(perhaps cut short while being downloaded or copied)."
    ),
    # %(error)s of upload.invalid_json: ours, and those of Python's JSON parser (its own English texts)
    "upload.json.comma_before_end": _("a record is expected after the last comma"),
    "upload.json.after_end": _("Extra data after the end of the list"),
    "upload.json.expecting_value": _("Expecting value"),
    "upload.json.expecting_comma": _("Expecting ',' delimiter"),
    "upload.json.expecting_colon": _("Expecting ':' delimiter"),
    "upload.json.expecting_name": _("Expecting property name enclosed in double quotes"),
    "upload.json.control_character": _("Invalid control character"),
    "upload.json.escape": _("Invalid \\escape"),
    "upload.json.unicode_escape": _("Invalid \\uXXXX escape"),
    "upload.json.unterminated_string": _("Unterminated string starting"),
    "upload.json.extra_data": _("Extra data"),
    "upload.json.trailing_comma_object": _("Illegal trailing comma before end of object"),
    "upload.json.trailing_comma_array": _("Illegal trailing comma before end of array"),
    "upload.not_a_list": _(
        "The file holds a single JSON object, not a list of records: a JSON export of clinic records "
        "is a list [{“model”: …, “pk”: …, “fields”: {…}}, …]."
    ),
    "upload.no_records": _("The file holds an empty list: there are no records to restore."),
    "upload.not_clinic_data": _(
        'The file contains records of "%(model)s", which is not clinic data: only the clinic\'s records '
        "(patients, appointments, …) can be restored from a file."
    ),
    "upload.missing_reference": _(
        "Records of “%(model)s” refer (field “%(field)s”) to %(target)s id %(id)s, which is not in "
        "the file (ids missing in all: %(count)d). A file must hold every record its records refer to."
    ),
    "upload.links_twice": _(
        "The file gives the links of “%(field)s” twice: as lists inside the records and as records of "
        "“%(through)s”. Keep only one of the two."
    ),
    # --- a JSON export: one record
    "upload.record.too_deep": _("Record %(number)d of the file is nested too deeply to be read."),
    "upload.record.long_number": _(
        "Record %(number)d of the file (line %(line)d) holds a number of more than %(limit)d digits "
        "(%(start)s…), which cannot be restored."
    ),
    "upload.record.too_big": _("Record %(number)d of the file is larger than %(limit)s; it cannot be restored."),
    "upload.record": _("Record %(number)d of the file (line %(line)d) %(problem)s"),
    # %(problem)s of upload.record
    "upload.record.not_a_record": _("is not a record {“model”: …, “pk”: …, “fields”: {…}} of a JSON export."),
    "upload.record.unexpected_keys": _("has unexpected keys (%(keys)s)."),
    "upload.record.no_pk": _("has no id (“pk”): %(hint)s"),
    "upload.record.no_fields": _("has no “fields” object."),
    "upload.record.duplicate": _("repeats %(where)s: each record may appear only once."),
    # --- a JSON export: one value
    "upload.invalid_value": _(
        "Record %(number)d of the file (line %(line)d, %(where)s), field “%(field)s”: %(reason)s"
    ),
    # %(reason)s of upload.invalid_value (made a sentence by upload.sentence when it has no final stop)
    "upload.sentence": _("%(text)s."),
    "upload.natural_keys": _(
        "files exported with natural keys (dumpdata --natural-primary or --natural-foreign) cannot be restored; "
        "export them again with “manage.py dumpdata dental --indent 2”."
    ),
    "upload.invalid_value.no_such_field": _("%(model)s has no such field"),
    "upload.invalid_value.given_twice": _("the field is given twice"),
    "upload.invalid_value.json_nulls_list": _("expected a list of field names"),
    "upload.invalid_value.json_nulls_name": _("“%(name)s” is not a JSON field holding null"),
    "upload.invalid_value.null": _("is empty (null), but this field cannot be empty"),
    "upload.invalid_value.missing": _("the field is missing, and it has no default value"),
    "upload.invalid_value.not_a_list": _("expected a list of ids, found %(type)s"),
    "upload.invalid_value.null_id": _("the list holds null instead of an id"),
    "upload.invalid_value.expected": _("expected %(what)s, found %(type)s"),
    "upload.invalid_value.too_many_digits": _("“%(start)s…” has more than %(limit)d digits, which cannot be restored"),
    "upload.invalid_value.choices": _("“%(value)s” is not one of the allowed values (%(choices)s)"),
    "upload.invalid_value.file_name.folder": _(
        "“%(value)s” is not the name of a file of this clinic: it must be a path inside the clinic's "
        "“%(folder)s” folder (relative, without “..” or backslashes)"
    ),
    "upload.invalid_value.file_name.media": _(
        "“%(value)s” is not the name of a file of this clinic: it must be a path inside the clinic's "
        "media folder (relative, without “..” or backslashes)"
    ),
    "upload.invalid_value.out_of_range": _("%(value)s is out of range (%(low)s to %(high)s)"),
    "upload.invalid_value.nul": _("contains a NUL character, which the database cannot store"),
    "upload.invalid_value.too_long": _("is %(length)d characters long; at most %(max_length)d are allowed"),
    "upload.invalid_value.base64": _("is not valid base64 text"),
    "upload.invalid_value.json_not_storable": _("is not JSON data the database can store (NaN or infinity?)"),
    "upload.invalid_value.json_nul": _("contains a NUL character (\\u0000), which the database cannot store"),
    "upload.invalid_value.not_a_number": _("is not a number"),
    "upload.invalid_value.too_large": _("%(value)s is too large (at most %(digits)d digits before the decimal point)"),
    "upload.invalid_value.decimal_places": _("%(value)s has more than %(places)d decimal places"),
    # a text in English only: Python's own message, or a message of a validator not listed below
    "upload.text": "%(text)s",
    "upload.texts": "%(first)s %(second)s",
    # %(what)s and %(type)s of upload.invalid_value.expected and .not_a_list
    "upload.kind.null": "null",
    "upload.kind.true_false": "true/false",
    "upload.kind.text": _("text"),
    "upload.kind.list": _("a list"),
    "upload.kind.object": _("an object"),
    "upload.kind.number": _("a number"),
    "upload.kind.whole_number": _("a whole number"),
    "upload.kind.decimal_number": _("a decimal number"),
    "upload.kind.true_or_false": _("true or false"),
    "upload.kind.uuid": _("a UUID"),
    "upload.kind.ip_address": _("an IP address"),
    "upload.kind.date": _("a date"),
    "upload.kind.time": _("a time"),
    "upload.kind.date_time": _("a date and time"),
    "upload.kind.duration": _("a duration"),
    "upload.kind.base64": _("base64 text"),
    # Django's own messages (Django 5.2), raised by model fields' to_python() and validators
    "upload.django.integer": _("“%(value)s” value must be an integer."),
    "upload.django.float": _("“%(value)s” value must be a float."),
    "upload.django.decimal": _("“%(value)s” value must be a decimal number."),
    "upload.django.boolean": _("“%(value)s” value must be either True or False."),
    "upload.django.boolean_nullable": _("“%(value)s” value must be either True, False, or None."),
    "upload.django.null_boolean": _("“%(value)s” value must be either None, True or False."),
    "upload.django.uuid": _("“%(value)s” is not a valid UUID."),
    "upload.django.date": _("“%(value)s” value has an invalid date format. It must be in YYYY-MM-DD format."),
    "upload.django.date_invalid": _("“%(value)s” value has the correct format (YYYY-MM-DD) but it is an invalid date."),
    "upload.django.datetime": _(
        "“%(value)s” value has an invalid format. It must be in YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format."
    ),
    "upload.django.datetime_invalid": _(
        "“%(value)s” value has the correct format (YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ]) but it is an invalid date/time."
    ),
    "upload.django.time": _("“%(value)s” value has an invalid format. It must be in HH:MM[:ss[.uuuuuu]] format."),
    "upload.django.time_invalid": _(
        "“%(value)s” value has the correct format (HH:MM[:ss[.uuuuuu]]) but it is an invalid time."
    ),
    "upload.django.duration": _(
        "“%(value)s” value has an invalid format. It must be in [DD] [[HH:]MM:]ss[.uuuuuu] format."
    ),
    "upload.django.json": _("Value must be valid JSON."),
    "upload.django.ip_address": _("Enter a valid %(protocol)s address."),
    "upload.django.ipv4": _("IPv4"),
    "upload.django.ipv6": _("IPv6"),
    "upload.django.ipv46": _("IPv4 or IPv6"),
}
