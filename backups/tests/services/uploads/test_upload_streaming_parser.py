"""The streaming json reader of uploads reads the same records wherever the reads cut the text."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

from backups.formats.json.parser import JsonArray
from backups.services.upload import UploadRefused

pytestmark = pytest.mark.django_db


class Trickle(io.RawIOBase):
    """Gives at most ``step`` bytes per read: every record and character gets cut somewhere."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data[self.pos : self.pos + min(self.step, len(buffer))]
        memoryview(buffer).cast("B")[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_the_json_reader_is_independent_of_where_reads_cut_the_text(step):
    records = [
        {"model": "dental.patient", "pk": n, "fields": {"t": "ñ😀€" * n, "d": 1.5, "x": [None, True]}}
        for n in range(40)
    ]
    text, lines = "\ufeff[\r\n", []
    for record in records:
        lines.append(text.count("\n") + 1)
        text += json.dumps(record, ensure_ascii=False, indent=record["pk"] % 3 or None) + ",\n"
    text = text[:-2] + "]\n"
    got = list(JsonArray(Trickle(text.encode(), step)).elements())
    assert [value for _n, _line, value in got] == json.loads(text[1:], parse_float=Decimal)
    assert [line for _n, line, _v in got] == lines
    assert [n for n, _line, _v in got] == list(range(1, 41))

    broken = text.replace('"pk": 33, "fields": {', '"pk": 33, "fields": {,')
    line = broken[: broken.index('"fields": {,')].count("\n") + 1
    column = broken.index('"fields": {,') + 11 - broken.rfind("\n", 0, broken.index('"fields": {,'))
    with pytest.raises(UploadRefused, match=f"at line {line}, column {column}\\."):
        list(JsonArray(Trickle(broken.encode(), step)).elements())
    first_big = next(
        n for n, r in enumerate(records, 1) if len(json.dumps(r, ensure_ascii=False, indent=r["pk"] % 3 or None)) > 200
    )
    with pytest.raises(UploadRefused, match=f"Record {first_big} of the file is larger than 200 bytes"):
        list(JsonArray(Trickle(text.encode(), step), max_element_chars=200).elements())
