"""A Django JSON fixture (``dumpdata dental``) converted into the canonical json payload, checked value by value.

Each model field's value is checked and normalised the way the payload writer would write
it (``kinds.KINDS``); choices, file names inside the clinic's folder, lengths, ranges
and digits are refused with a reason naming the record and the field.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, BinaryIO

from django.db import models

from backups.conf import conf
from backups.exceptions import UploadRefused
from backups.formats.base import ChunkReader
from backups.formats.json.parser import (
    COPY_BYTES,
    JsonArray,
    in_english,
    message_param,
)
from backups.formats.json.payload import JSON_NULLS_KEY, payload_line_maker, payload_models, payload_table
from backups.formats.json.values import BadValue, json_type, normalizer

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
                    normalize=normalizer(column.field, column.kind),
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

    def _target_of(self, number: int, line: int, record: Any) -> _Target:
        """The table a record belongs to, once its shape is a Django fixture record's."""
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
        if not isinstance(record.get("fields"), dict):
            raise self._refuse_record(number, line, message_param("upload.record.no_fields"))
        return target

    def _add(self, number: int, line: int, record: Any) -> None:
        target = self._target_of(number, line, record)
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
        except BadValue as exc:
            raise bad("pk", exc.reason) from None

        nested = self._fill_row(row, target, record, bad)

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

    def _fill_row(self, row: list[Any], target: _Target, record: dict, bad: Callable) -> list[tuple[_Nested, Any]]:
        """Every field's value checked into ``row`` (defaults for the missing); returns the many-to-many lists."""
        fields = record["fields"]
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
            except BadValue as exc:
                raise bad(name, exc.reason) from None
        for slot in target.fields:
            if not filled[slot.index]:
                try:
                    row[slot.index] = self._default(slot)
                except BadValue as exc:
                    raise bad(slot.name, exc.reason) from None
        return nested

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
            raise BadValue("upload.invalid_value.null")
        return slot.normalize(value)

    @staticmethod
    def _default(slot: _Slot) -> Any:
        """A field missing from a record gets its model default, as ``loaddata`` does."""
        value = slot.field.get_default()
        if value is None:
            if not slot.field.null:
                raise BadValue("upload.invalid_value.missing")
            return None
        return slot.normalize(value)

    def _add_links(self, link: _Nested, pk: Any, value: Any, bad: Callable) -> None:
        """Rows of the through model for a nested many-to-many list; ids are numbered from 1."""
        through = link.through
        if through.explicit:
            raise self._links_twice(through)
        if not isinstance(value, list):
            raise bad(link.name, message_param("upload.invalid_value.not_a_list", type=json_type(value)))
        seen = set()
        slot = link.target_slot
        for item in value:
            if isinstance(item, list):
                raise bad(link.name, _NATURAL_KEYS_HINT, "natural_keys")
            if item is None:
                raise bad(link.name, message_param("upload.invalid_value.null_id"))
            try:
                other = slot.normalize(item)
            except BadValue as exc:
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
        return ChunkReader(_payload_pieces([(target.spool, target.size) for target in self._targets if target.size]))


def _sentence(reason: dict[str, Any]) -> dict[str, Any]:
    """``reason`` as a sentence: given a final stop when its English text has none."""
    if in_english(reason).strip().endswith((".", "!", "?")):
        return reason
    return message_param("upload.sentence", text=reason)


def _payload_pieces(spools: list[tuple[BinaryIO, int]]) -> Iterator[bytes]:
    """``[``, every spooled line (each ends with ``,\\n``; the very last one's comma dropped), ``]``."""
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
