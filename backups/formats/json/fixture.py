"""A Django JSON fixture (``dumpdata dental``) converted into the canonical json payload, checked value by value.

Each model field's value is checked and normalised the way the payload writer would write
it (``payload._ENCODERS``); choices, file names inside the clinic's folder, lengths, ranges
and digits are refused with a reason naming the record and the field.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import posixpath
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from json.encoder import encode_basestring
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone, translation
from django.utils.functional import Promise

from backups.conf import conf
from backups.exceptions import UploadRefused, render
from backups.formats.json.parser import (
    COPY_BYTES,
    MAX_NUMBER_DIGITS,
    JsonArray,
    in_english,
    message_param,
)
from backups.formats.json.payload import JSON_NULLS_KEY, json_text, payload_line_maker, payload_models, payload_table
from backups.messages_upload import UPLOAD_MESSAGES

# --- Checking values -------------------------------------------------------------------


class _BadValue(ValueError):
    """A value that does not fit its field; ``reason`` (a message) completes "field “x”: ..."."""

    def __init__(self, message_id: str, /, **params: Any) -> None:
        self.reason = message_param(message_id, **params)
        super().__init__(message_id)

    @classmethod
    def of(cls, reason: dict[str, Any]) -> _BadValue:
        error = cls(reason["message_id"])
        error.reason = reason
        return error

    def __str__(self) -> str:
        return render(self.reason["message_id"], self.reason.get("params"))


def _text(text: str) -> _BadValue:
    """A reason in English only (Python's own message)."""
    return _BadValue("upload.text", text=text.strip())


def _json_type(value: Any) -> dict[str, Any]:
    if value is None:
        kind = "null"
    elif isinstance(value, bool):
        kind = "true_false"
    elif isinstance(value, str):
        kind = "text"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, dict):
        kind = "object"
    elif isinstance(value, Decimal):
        kind = "decimal_number"
    else:
        kind = "number"
    return message_param(f"upload.kind.{kind}")


def _expect(value: Any, types: tuple[type, ...], what: str) -> None:
    """``what``: an ``upload.kind.*`` message id's last part."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = message_param(f"upload.kind.{what}")
        raise _BadValue("upload.invalid_value.expected", what=expected, type=_json_type(value))


def _expect_digits(value: Any) -> None:
    """Numbers given as text: refuse more digits than can be read (before Django tries)."""
    if isinstance(value, str) and len(value.strip().lstrip("+-")) > MAX_NUMBER_DIGITS:
        raise _BadValue("upload.invalid_value.too_many_digits", start=value.strip()[:20], limit=MAX_NUMBER_DIGITS)


# Django's messages (model fields' to_python() and validators), by their English text.
_DJANGO_MESSAGES = {
    text: message_id for message_id, text in UPLOAD_MESSAGES.items() if message_id.startswith("upload.django.")
}


def _validation_reason(exc: ValidationError) -> dict[str, Any]:
    """Django's ValidationError as a message: Django's own text and parameters when it is one we list."""
    if not hasattr(exc, "error_list"):  # a dictionary of errors: not raised by to_python() or validators
        with translation.override(None):
            return message_param("upload.text", text=" ".join(exc.messages))
    reasons = [_django_message(error) for error in exc.error_list]
    reason = reasons[0]
    for other in reasons[1:]:
        reason = message_param("upload.texts", first=reason, second=other)
    return reason


def _django_message(error: ValidationError) -> dict[str, Any]:
    with translation.override(None):  # Django's English texts are the msgids
        message_id = _DJANGO_MESSAGES.get(str(error.message))
        if message_id is None:
            return message_param("upload.text", text=" ".join(error.messages))
        params = {}
        for key, value in (error.params or {}).items():
            if isinstance(value, Promise) and str(value) in _DJANGO_MESSAGES:
                params[key] = message_param(_DJANGO_MESSAGES[str(value)])
            elif value is None or isinstance(value, bool | int | float):
                params[key] = value
            else:
                params[key] = str(value)[:100]
    return message_param(message_id, **params)


def _to_python(model_field: models.Field, value: Any) -> Any:
    try:
        return model_field.to_python(value)
    except ValidationError as exc:
        raise _BadValue.of(_validation_reason(exc)) from None
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise _text(str(exc) or type(exc).__name__) from None


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    """A function checking one non-null value of ``model_field`` and giving it as the database
    would give it to the json payload writer (see ``json_payload._ENCODERS``).

    Values come from JSON, or are the field's default (a Python value) for a missing field.
    A field with ``choices`` takes only those; a file field only names of the clinic's files.
    """
    normalize = _value_normalizer(model_field, kind)
    if isinstance(model_field, models.FileField):
        return _file_name_normalizer(model_field, normalize)
    if model_field.choices and not model_field.is_relation:
        return _choice_normalizer(model_field, normalize)
    return normalize


def _choice_normalizer(model_field: models.Field, normalize: Callable[[Any], Any]) -> Callable[[Any], Any]:
    allowed = {}
    for value, _label in model_field.flatchoices:
        with contextlib.suppress(_BadValue):
            allowed[normalize(value)] = value

    def choice(value: Any) -> Any:
        result = normalize(value)
        if result not in allowed and not (model_field.blank and result in model_field.empty_values):
            raise _BadValue(
                "upload.invalid_value.choices",
                value=str(value)[:100],
                choices=", ".join(str(v) for v in allowed.values())[:300],
            )
        return result

    return choice


def _file_name_normalizer(model_field: models.FileField, normalize: Callable[[Any], str]) -> Callable[[Any], str]:
    """File names are relative to the clinic's own media folder (MEDIA_ROOT/<schema>/, added by
    django-tenants' storage): a name must stay inside it, under the folder ``upload_to`` names."""
    upload_to = model_field.upload_to if isinstance(model_field.upload_to, str) else ""
    folders = []
    for part in upload_to.split("/")[:-1]:  # the fixed folders before any strftime "%Y"...
        if "%" in part or not part:
            break
        folders.append(part + "/")
    folder = "".join(folders)

    def file_name(value: Any) -> str:
        name = normalize(value)
        if not name:
            return name  # no file
        if (
            "\\" in name
            or name.startswith("/")
            or posixpath.normpath(name) != name
            or ".." in name.split("/")
            or not name.startswith(folder)
        ):
            if folder:
                raise _BadValue("upload.invalid_value.file_name.folder", value=name[:100], folder=folder)
            raise _BadValue("upload.invalid_value.file_name.media", value=name[:100])
        return name

    return file_name


def _value_normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    target = model_field
    while target.is_relation:
        target = target.target_field

    if kind == "int":
        low, high = connection.ops.integer_field_ranges.get(target.get_internal_type(), (None, None))

        def integer(value: Any) -> int:
            _expect(value, (int, str), "whole_number")
            _expect_digits(value)
            result = _to_python(model_field, value)
            if low is not None and not low <= result <= high:
                raise _BadValue("upload.invalid_value.out_of_range", value=result, low=low, high=high)
            return result

        return integer
    if kind == "text":
        max_length = getattr(target, "max_length", None)

        def text(value: Any) -> str:
            _expect(value, (str, int, Decimal), "text")
            result = _to_python(model_field, value)
            result = result if isinstance(result, str) else str(result)
            if "\x00" in result:
                raise _BadValue("upload.invalid_value.nul")
            if max_length is not None and len(result) > max_length:
                raise _BadValue("upload.invalid_value.too_long", length=len(result), max_length=max_length)
            return result

        return text
    if kind == "bool":

        def boolean(value: Any) -> bool:
            _expect(value, (bool, int, str), "true_or_false")
            return _to_python(model_field, value)

        return boolean
    if kind == "decimal":
        return _decimal_normalizer(model_field, target)
    if kind == "uuid":

        def uuid_text(value: Any) -> str:
            _expect(value, (str, int, uuid.UUID), "uuid")
            return str(_to_python(model_field, value))

        return uuid_text
    if kind == "inet":

        def address(value: Any) -> str:
            _expect(value, (str,), "ip_address")
            result = _to_python(model_field, value)
            try:
                target.run_validators(result)
            except ValidationError as exc:
                raise _BadValue.of(_validation_reason(exc)) from None
            return result

        return address
    if kind == "date":

        def day(value: Any) -> date:
            _expect(value, (str, date), "date")
            return _to_python(model_field, value)

        return day
    if kind == "time":

        def time_of_day(value: Any) -> time:
            _expect(value, (str, time), "time")
            return _to_python(model_field, value).replace(tzinfo=None)

        return time_of_day
    if kind == "datetime":
        use_tz = settings.USE_TZ
        default_tz = timezone.get_default_timezone()

        def moment(value: Any) -> datetime:
            _expect(value, (str, date), "date_time")
            result = _to_python(model_field, value)
            try:
                if use_tz:
                    if timezone.is_naive(result):
                        result = timezone.make_aware(result, default_tz)  # as loaddata does
                    return result.astimezone(UTC)
                return timezone.make_naive(result, default_tz) if timezone.is_aware(result) else result
            except (ValueError, OverflowError) as exc:
                raise _text(str(exc) or type(exc).__name__) from None

        return moment
    if kind == "duration":

        def duration(value: Any) -> timedelta:
            _expect(value, (str, timedelta), "duration")
            return _to_python(model_field, value)

        return duration
    if kind == "binary":

        def binary(value: Any) -> bytes:
            if isinstance(value, bytes | bytearray | memoryview):
                return bytes(value)
            _expect(value, (str,), "base64")
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _BadValue("upload.invalid_value.base64") from None

        return binary
    if kind == "json":

        def json_value(value: Any) -> str:
            try:
                result = json_text(value)
            except (ValueError, TypeError, RecursionError):
                raise _BadValue("upload.invalid_value.json_not_storable") from None
            if _JSON_NUL.search(result):
                raise _BadValue("upload.invalid_value.json_nul")
            return result

        return json_value
    if kind == "float":

        def number(value: Any) -> float:
            _expect(value, (int, float, Decimal, str), "number")
            _expect_digits(value)
            return _to_python(model_field, value)

        return number
    raise ValueError(f"unknown column kind {kind!r}")  # json_payload refuses such fields first


def _decimal_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], str]:
    max_digits, places = target.max_digits, target.decimal_places

    def decimal_text(value: Any) -> str:
        _expect(value, (str, int, Decimal), "decimal_number")
        _expect_digits(value)
        result = _to_python(model_field, value)
        if not result.is_finite():
            raise _BadValue("upload.invalid_value.not_a_number")
        if max_digits is None or places is None:
            return str(result)
        if not result.is_zero() and result.adjusted() + 1 > max_digits - places:
            raise _BadValue("upload.invalid_value.too_large", value=result, digits=max_digits - places)
        with localcontext() as context:
            context.prec = max_digits + 2
            exact = result.quantize(Decimal(1).scaleb(-places))
        if exact != result:
            raise _BadValue("upload.invalid_value.decimal_places", value=result, places=places)
        return str(exact.copy_abs() if exact.is_zero() else exact)

    return decimal_text


# --- Converting a fixture into the canonical payload ------------------------------------

_RECORD_KEYS = frozenset({"model", "pk", "fields", JSON_NULLS_KEY})
_NATURAL_KEYS_HINT = message_param("upload.natural_keys")


@dataclass(eq=False)
class _Slot:
    index: int  # position in the row (the primary key is 0)
    name: str
    kind: str
    field: models.Field
    normalize: Callable[[Any], Any]
    reference: str | None  # label of the payload model a foreign key points to


@dataclass(eq=False)
class _Nested:
    """A many-to-many field given as a list inside its records (as Django's serializer writes it)."""

    name: str
    through: _Target
    source_index: int
    target_index: int
    target_slot: _Slot


@dataclass(eq=False)
class _Target:
    """One payload model: how to check its records, and what was written of it."""

    model: type[models.Model]
    label: str
    db_table: str
    width: int
    line: Callable[[tuple], str]
    pk: _Slot
    slots: dict[str, _Slot]  # by field name and by attname
    fields: list[_Slot]
    nested: dict[str, _Nested] = field(default_factory=dict)
    spool: BinaryIO | None = None
    size: int = 0
    count: int = 0
    pks: set = field(default_factory=set)
    last_pk: Any = None
    unsorted: bool = False
    explicit: bool = False  # has records of its own in the file
    generated: int = 0  # rows made from nested many-to-many lists
    nested_in: str = ""  # "dental.treatment.materials" for a through model, in messages


class FixtureConverter:
    """Checks the records of a fixture and spools their canonical lines, per model.

    Lines are spooled per model so that the payload comes out in dependency order (the
    order of :func:`payload_models`) whatever the file's order; a model whose records came
    out of primary-key order is sorted by seeking through its spool.
    """

    def __init__(self) -> None:
        self._directory = conf.upload_tmp_dir
        self._targets: list[_Target] = []
        self._by_label: dict[str, _Target] = {}
        self._references: dict[tuple[str, str, str], set] = {}
        self._records = 0
        self._build()

    def __enter__(self) -> FixtureConverter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for target in self._targets:
            if target.spool is not None:
                target.spool.close()
                target.spool = None

    # -- setup

    def _build(self) -> None:
        models_ = payload_models()
        labels = {model: model._meta.label_lower for model in models_}
        for model in models_:
            table = payload_table(model)
            slots = [
                _Slot(
                    index=index,
                    name=column.name,
                    kind=column.kind,
                    field=column.field,
                    normalize=_normalizer(column.field, column.kind),
                    reference=labels.get(column.field.related_model) if column.field.is_relation else None,
                )
                for index, column in enumerate(table.columns)
            ]
            by_name = {slot.name: slot for slot in slots[1:]}
            by_name.update({slot.field.attname: slot for slot in slots[1:] if slot.field.attname != slot.name})
            target = _Target(
                model=model,
                label=labels[model],
                db_table=table.db_table,
                width=len(slots),
                line=payload_line_maker(table),
                pk=slots[0],
                slots=by_name,
                fields=slots[1:],
            )
            self._targets.append(target)
            self._by_label[target.label] = target
        for target in self._targets:
            for m2m in target.model._meta.local_many_to_many:
                through = m2m.remote_field.through
                if not through._meta.auto_created or through not in labels:
                    continue
                through_target = self._by_label[labels[through]]
                columns = {slot.name: slot for slot in through_target.fields}
                source, destination = columns[m2m.m2m_field_name()], columns[m2m.m2m_reverse_field_name()]
                target.nested[m2m.name] = _Nested(
                    name=m2m.name,
                    through=through_target,
                    source_index=source.index,
                    target_index=destination.index,
                    target_slot=destination,
                )
                through_target.nested_in = f"{target.label}.{m2m.name}"

    # -- reading

    def read(self, upload: BinaryIO) -> None:
        """Check and convert every record of the file; raise UploadRefused at the first problem."""
        upload.seek(0)
        for number, line, value in JsonArray(upload).elements():
            self._add(number, line, value)
        self._finish()

    def _refuse_record(
        self, number: int, line: int, problem: dict[str, Any], *, code: str = "invalid_record"
    ) -> UploadRefused:
        return UploadRefused(code, "upload.record", number=number, line=line, problem=problem)

    def _add(self, number: int, line: int, record: Any) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("model"), str):
            raise self._refuse_record(number, line, message_param("upload.record.not_a_record"))
        label = record["model"]
        target = self._by_label.get(label.lower())
        if target is None:
            raise UploadRefused("not_clinic_data", "upload.not_clinic_data", model=label[:100])
        if unexpected := record.keys() - _RECORD_KEYS:
            raise self._refuse_record(
                number, line, message_param("upload.record.unexpected_keys", keys=", ".join(sorted(unexpected))[:200])
            )
        if record.get("pk") is None:
            raise self._refuse_record(
                number, line, message_param("upload.record.no_pk", hint=_NATURAL_KEYS_HINT), code="natural_keys"
            )
        fields = record.get("fields")
        if not isinstance(fields, dict):
            raise self._refuse_record(number, line, message_param("upload.record.no_fields"))
        where = f"{target.label} id {json.dumps(record['pk'], default=str)[:60]}"

        def bad(name: str, reason: dict[str, Any], code: str = "invalid_value") -> UploadRefused:
            return UploadRefused(
                code,
                "upload.invalid_value",
                number=number,
                line=line,
                where=where,
                field=name[:100],
                reason=_sentence(reason),
            )

        if isinstance(record["pk"], list | dict):
            raise bad("pk", _NATURAL_KEYS_HINT, "natural_keys")
        row: list[Any] = [None] * target.width
        try:
            pk = row[0] = target.pk.normalize(record["pk"])
        except _BadValue as exc:
            raise bad("pk", exc.reason) from None

        json_nulls = self._json_nulls(record, target, fields, bad)
        filled = [False] * target.width
        nested: list[tuple[_Nested, Any]] = []
        for name, value in fields.items():
            slot = target.slots.get(name)
            if slot is None:
                if name in target.nested:
                    nested.append((target.nested[name], value))
                    continue
                raise bad(name, message_param("upload.invalid_value.no_such_field", model=target.label))
            if filled[slot.index]:
                raise bad(name, message_param("upload.invalid_value.given_twice"))
            filled[slot.index] = True
            if isinstance(value, list) and slot.reference is not None:
                raise bad(name, _NATURAL_KEYS_HINT, "natural_keys")
            try:
                row[slot.index] = self._value(slot, value, name in json_nulls)
            except _BadValue as exc:
                raise bad(name, exc.reason) from None
        for slot in target.fields:
            if not filled[slot.index]:
                try:
                    row[slot.index] = self._default(slot)
                except _BadValue as exc:
                    raise bad(slot.name, exc.reason) from None

        if target.generated:
            raise self._links_twice(target)
        target.explicit = True
        if pk in target.pks:
            raise self._refuse_record(
                number, line, message_param("upload.record.duplicate", where=where), code="duplicate_record"
            )
        self._write(target, row)
        for slot in target.fields:
            if slot.reference is not None and row[slot.index] is not None:
                self._references.setdefault((target.label, slot.name, slot.reference), set()).add(row[slot.index])
        for link, value in nested:
            self._add_links(link, pk, value, bad)
        self._records += 1

    def _json_nulls(self, record: dict, target: _Target, fields: dict, bad: Callable) -> set[str]:
        """Our own payload's marker of JSON fields holding JSON null (rather than SQL NULL)."""
        names = record.get(JSON_NULLS_KEY, [])
        if not isinstance(names, list):
            raise bad(JSON_NULLS_KEY, message_param("upload.invalid_value.json_nulls_list"))
        for name in names:
            slot = target.slots.get(name) if isinstance(name, str) else None
            if slot is None or slot.kind != "json" or fields.get(name, 0) is not None:
                raise bad(JSON_NULLS_KEY, message_param("upload.invalid_value.json_nulls_name", name=str(name)[:100]))
        return set(names)

    @staticmethod
    def _value(slot: _Slot, value: Any, json_null: bool) -> Any:
        if value is None:
            if slot.kind == "json" and (json_null or not slot.field.null):
                return "null"  # JSON null: the only null a non-nullable JSON field can hold
            if slot.field.null:
                return None
            raise _BadValue("upload.invalid_value.null")
        return slot.normalize(value)

    @staticmethod
    def _default(slot: _Slot) -> Any:
        """A field missing from a record gets its model default, as ``loaddata`` does."""
        value = slot.field.get_default()
        if value is None:
            if not slot.field.null:
                raise _BadValue("upload.invalid_value.missing")
            return None
        return slot.normalize(value)

    def _add_links(self, link: _Nested, pk: Any, value: Any, bad: Callable) -> None:
        """Rows of the through model for a nested many-to-many list; ids are numbered from 1."""
        through = link.through
        if through.explicit:
            raise self._links_twice(through)
        if not isinstance(value, list):
            raise bad(link.name, message_param("upload.invalid_value.not_a_list", type=_json_type(value)))
        seen = set()
        slot = link.target_slot
        for item in value:
            if isinstance(item, list):
                raise bad(link.name, _NATURAL_KEYS_HINT, "natural_keys")
            if item is None:
                raise bad(link.name, message_param("upload.invalid_value.null_id"))
            try:
                other = slot.normalize(item)
            except _BadValue as exc:
                raise bad(link.name, exc.reason) from None
            if other in seen:
                continue
            seen.add(other)
            through.generated += 1
            row: list[Any] = [None] * through.width
            row[0] = through.generated
            row[link.source_index] = pk
            row[link.target_index] = other
            self._write(through, row)
            if slot.reference is not None:
                self._references.setdefault((through.label, slot.name, slot.reference), set()).add(other)

    @staticmethod
    def _links_twice(through: _Target) -> UploadRefused:
        return UploadRefused("invalid_record", "upload.links_twice", field=through.nested_in, through=through.label)

    def _write(self, target: _Target, row: list[Any]) -> None:
        pk = row[0]
        if target.last_pk is not None and pk < target.last_pk:
            target.unsorted = True
        target.last_pk = pk
        target.pks.add(pk)
        if target.spool is None:
            target.spool = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115 - closed in close()
        data = target.line(tuple(row)).encode("utf-8") + b",\n"
        target.spool.write(data)
        target.size += len(data)
        target.count += 1

    def _finish(self) -> None:
        if not self._records:
            raise UploadRefused("no_records", "upload.no_records")
        for (label, name, referenced), ids in self._references.items():
            missing = ids - self._by_label[referenced].pks
            if missing:
                example = min(missing, key=lambda value: (str(type(value)), value))
                raise UploadRefused(
                    "missing_reference",
                    "upload.missing_reference",
                    model=label,
                    field=name,
                    target=referenced,
                    id=example,
                    count=len(missing),
                )
        for target in self._targets:
            target.pks = set()  # no longer needed
            if target.unsorted:
                self._sort(target)
            if target.spool is not None:
                target.spool.flush()

    def _sort(self, target: _Target) -> None:
        """Rewrite a spool in primary-key order (an index of offsets in memory, lines on disk)."""
        assert target.spool is not None
        prefix = len('{"model": ' + encode_basestring(target.label) + ', "pk": ')
        decoder = json.JSONDecoder()
        index = []
        offset = 0
        target.spool.flush()
        target.spool.seek(0)
        for raw in target.spool:
            pk, _end = decoder.raw_decode(raw.decode("utf-8"), prefix)
            index.append((pk, offset, len(raw)))
            offset += len(raw)
        index.sort(key=lambda entry: entry[0])
        ordered = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115 - closed in close()
        try:
            for _pk, start, length in index:
                target.spool.seek(start)
                ordered.write(target.spool.read(length))
        except BaseException:
            ordered.close()
            raise
        target.spool.close()
        target.spool = ordered

    # -- results

    def counts(self) -> dict[str, int]:
        """Rows per table ({db_table: rows}) for every payload model, as a manifest holds them."""
        return {target.db_table: target.count for target in self._targets}

    def payload(self) -> BinaryIO:
        """The canonical json payload, read from the spools (one record per line, parents first)."""
        return _PayloadReader([(target.spool, target.size) for target in self._targets if target.size])


def _sentence(reason: dict[str, Any]) -> dict[str, Any]:
    """``reason`` as a sentence: given a final stop when its English text has none."""
    if in_english(reason).strip().endswith((".", "!", "?")):
        return reason
    return message_param("upload.sentence", text=reason)


class _PayloadReader(io.RawIOBase):
    """``[``, every spooled line (each ends with ``,\\n``; the very last one's comma dropped), ``]``."""

    def __init__(self, spools: list[tuple[BinaryIO, int]]) -> None:
        super().__init__()
        self._pieces = self._generate(spools)
        self._pending = memoryview(b"")

    @staticmethod
    def _generate(spools: list[tuple[BinaryIO, int]]) -> Iterator[bytes]:
        yield b"[\n"
        for position, (spool, size) in enumerate(spools):
            remaining = size - 2 if position == len(spools) - 1 else size
            spool.seek(0)
            while remaining:
                data = spool.read(min(COPY_BYTES, remaining))
                if not data:
                    raise OSError("a temporary file of the upload ended early")
                remaining -= len(data)
                yield data
        yield b"\n]\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count
