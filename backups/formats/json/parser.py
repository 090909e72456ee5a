"""A streaming parser for a file holding one JSON array: its elements one at a time, bounded memory.

Used for uploaded Django JSON fixtures (``dumpdata`` output): a multi-GB file is never held
whole. Every complaint is an ``UploadRefused`` with the line and column where it was found.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, BinaryIO

from django.utils import translation

from backups.exceptions import UploadRefused, render
from backups.messages.upload import UPLOAD_MESSAGES

MAX_RECORD_CHARS = 64 * 1024**2  # one record of a JSON file (a large X-ray in base64...)
MAX_NUMBER_DIGITS = 4300  # Python's default limit for int(text); longer numbers are refused
COPY_BYTES = 1024**2


def human_size(size: int) -> str:
    """A byte count for people: "2.0 GB"."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def not_recognized() -> UploadRefused:
    """The file is none of the kinds an upload can be."""
    return UploadRefused("not_recognized", "upload.not_recognized")


def message_param(message_id: str, /, **params: Any) -> dict[str, Any]:
    """A message as the parameter of another (``render()`` renders it with it, in the reader's language)."""
    return {"message_id": message_id, "params": {key: plain_value(value) for key, value in params.items()}}


def plain_value(value: Any) -> Any:
    """``value`` as a JSON value, for a message parameter."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(key): plain_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(item) for item in value]
    return str(value)


def in_english(message: dict[str, Any]) -> str:
    with translation.override(None):
        return render(message["message_id"], message.get("params"))


# --- Streaming a JSON array ------------------------------------------------------------

_NON_SPACE = re.compile(r"[^ \t\r\n]")
_LOOKAHEAD = 64  # a JSON error this close to the end of the buffer may just be a cut value


# The JSON parser's complaints (Python's own English texts) and ours, by text.
_JSON_ERRORS = {
    text: message_id for message_id, text in UPLOAD_MESSAGES.items() if message_id.startswith("upload.json.")
}


def _invalid_json(detail: str, line: int, column: int) -> UploadRefused:
    detail = detail.removesuffix(" at")
    message_id = _JSON_ERRORS.get(detail)
    error = message_param(message_id) if message_id else detail  # a text this Python's parser added
    return UploadRefused("invalid_json", "upload.invalid_json", error=error, line=line, column=column)


def _incomplete_json() -> UploadRefused:
    return UploadRefused("invalid_json", "upload.invalid_json.incomplete")


class _NumberTooLong(Exception):
    """A JSON number of more than MAX_NUMBER_DIGITS digits (raised while parsing; ``text`` is the number)."""

    def __init__(self, text: str) -> None:
        super().__init__(text[:20])
        self.text = text


def _parse_int(text: str) -> int:
    """A JSON integer; refused past MAX_NUMBER_DIGITS digits, which int() cannot convert."""
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(text)
    try:
        return int(text)
    except ValueError:  # sys.set_int_max_str_digits() set lower than ours
        raise _NumberTooLong(text) from None


def _parse_decimal(text: str) -> Decimal:
    """A JSON number with a fraction or an exponent, exactly; refused past MAX_NUMBER_DIGITS digits written out."""
    if len(text) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(text)
    try:
        value = Decimal(text)
    except ArithmeticError:  # an exponent beyond what decimal can represent
        raise _NumberTooLong(text) from None
    if abs(value.adjusted()) > MAX_NUMBER_DIGITS:
        raise _NumberTooLong(text)
    return value


class JsonArray:
    """The elements of a UTF-8 file holding one JSON array, parsed one at a time.

    ``json.JSONDecoder.raw_decode`` runs over a sliding text buffer: memory holds the element
    being parsed plus one read chunk, whatever the file's size or indentation. Line and
    column are tracked for error messages.
    """

    def __init__(self, stream: BinaryIO, *, max_element_chars: int = MAX_RECORD_CHARS) -> None:
        self._stream = stream
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder(parse_float=_parse_decimal, parse_int=_parse_int)
        self._max = max_element_chars
        self._buf = ""
        self._pos = 0
        self._mark = 0  # buffer index at which the line and column below hold
        self._line = 1
        self._col = 1
        self._eof = False
        self._started = False
        self._bytes_read = 0
        self._newlines_read = 0

    def elements(self) -> Iterator[tuple[int, int, Any]]:
        """Yield (number from 1, line where it starts, value) for each element of the array."""
        char = self._skip_space()
        if char == "{":
            raise UploadRefused("not_a_list", "upload.not_a_list")
        if char != "[":
            raise not_recognized()
        self._pos += 1
        char = self._skip_space()
        number = 0
        if char == "]":
            self._pos += 1
            self._expect_end()
            return
        while True:
            if char is None:
                raise _incomplete_json()
            number += 1
            self._advance(self._pos)
            yield number, self._line, self._value(number)
            char = self._skip_space()
            if char == ",":
                self._pos += 1
                char = self._skip_space()
                if char == "]":
                    raise self._syntax("a record is expected after the last comma", self._pos)
            elif char == "]":
                self._pos += 1
                self._expect_end()
                return
            elif char is None:
                raise _incomplete_json()
            else:
                raise self._syntax("Expecting ',' delimiter", self._pos)

    def _expect_end(self) -> None:
        if self._skip_space() is not None:
            raise self._syntax("Extra data after the end of the list", self._pos)

    def _value(self, number: int) -> Any:
        start = self._pos
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, start)
            except json.JSONDecodeError as exc:
                unterminated = exc.msg.startswith("Unterminated string")
                if not self._eof and (unterminated or len(self._buf) - exc.pos < _LOOKAHEAD):
                    if len(self._buf) - start > self._max:
                        raise self._too_big(number) from None
                    held = len(self._buf) - start  # read more each time: a huge record is parsed a few times only
                    self._fill(max(COPY_BYTES, min(held, self._max - held)))
                    start = self._pos
                    continue
                if unterminated or exc.pos >= len(self._buf.rstrip(" \t\r\n")):
                    raise _incomplete_json() from None  # the text stops inside a record
                raise self._syntax(exc.msg, exc.pos) from None
            except RecursionError:
                raise UploadRefused("invalid_record", "upload.record.too_deep", number=number) from None
            except _NumberTooLong as exc:
                raise UploadRefused(
                    "invalid_record",
                    "upload.record.long_number",
                    number=number,
                    line=self._line,
                    limit=MAX_NUMBER_DIGITS,
                    start=exc.text[:20],
                ) from None
            if end - start > self._max:
                raise self._too_big(number)
            self._pos = end
            return value

    def _too_big(self, number: int) -> UploadRefused:
        return UploadRefused("invalid_record", "upload.record.too_big", number=number, limit=human_size(self._max))

    def _skip_space(self) -> str | None:
        """The next character that is not JSON white space (not consumed), or None at the end."""
        while True:
            match = _NON_SPACE.search(self._buf, self._pos)
            if match:
                self._pos = match.start()
                return self._buf[self._pos]
            self._pos = len(self._buf)
            self._advance(self._pos)
            if not self._fill():
                return None

    def _fill(self, size: int = COPY_BYTES) -> bool:
        """Append the next chunk to the buffer, dropping what is done with; False at the end."""
        if self._eof:
            return False
        data = self._stream.read(size)
        pending = len(self._utf8.getstate()[0])
        try:
            text = self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self._not_utf8(exc, pending) from None
        self._bytes_read += len(data)
        self._eof = not data
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._newlines_read += text.count("\n")
        if self._mark:
            self._buf = self._buf[self._mark :]
            self._pos -= self._mark
            self._mark = 0
        self._buf += text
        return True

    def _advance(self, index: int) -> None:
        self._line, self._col = self._where(index)
        self._mark = index

    def _where(self, index: int) -> tuple[int, int]:
        segment = self._buf[self._mark : index]
        newlines = segment.count("\n")
        if not newlines:
            return self._line, self._col + len(segment)
        return self._line + newlines, len(segment) - segment.rfind("\n")

    def _syntax(self, detail: str, index: int) -> UploadRefused:
        line, column = self._where(index)
        return _invalid_json(detail, line, column)

    def _not_utf8(self, exc: UnicodeDecodeError, pending: int) -> UploadRefused:
        before = bytes(exc.object[: exc.start]).decode("utf-8", "replace")
        return UploadRefused(
            "not_utf8",
            "upload.not_utf8.byte",
            byte=self._bytes_read - pending + exc.start + 1,
            value=exc.object[exc.start],
            line=1 + self._newlines_read + before.count("\n"),
        )
