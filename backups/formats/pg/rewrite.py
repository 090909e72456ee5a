"""Rewriting a schema's name in the plain script pg_restore writes, token by token.

pg_dump schema-qualifies every reference and sets ``search_path`` to ``''``, so the schema
name appears only as the first part of a dotted name, after the keyword SCHEMA, or as the
qualifier inside a string cast to a reg* type or given to a sequence function. Only those
tokens change; COPY data never reaches this module (``pg.script`` sends it apart). What
cannot be moved safely is refused (``RestoreIntoError``) before it runs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg

from backups.formats.base import DEFAULT_LOCK_TIMEOUT_MS, RestoreIntoError, quote_ident

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_MS",
    "RestoreIntoError",
    "RewritingCursor",
    "SchemaRewriter",
    "quote_ident",
    "rewrite_schema",
]

# --- Rewriting the schema name in pg_restore's script -----------------------------------


_TOKEN = re.compile(
    rb"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*)
    | (?P<block>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<dollar>\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$)
    | (?P<qident>"(?:[^"]|"")*")
    | (?P<ident>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
    | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    | (?P<param>\$[0-9]+)
    | (?P<cast>::)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_COMMENT_EDGE = re.compile(rb"/\*|\*/")
_REG_TYPES = {
    b"regclass",
    b"regproc",
    b"regprocedure",
    b"regtype",
    b"regoper",
    b"regoperator",
    b"regconfig",
    b"regdictionary",
    b"regnamespace",
    b"regcollation",
}
_SEQUENCE_FUNCTIONS = {b"setval", b"nextval", b"currval"}
_NAME = rb'\s*(?:"((?:[^"]|"")*)"|([A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*))\s*'  # one name, in a literal
_NAME_IN_LITERAL = re.compile(_NAME + rb"(\..*)", re.DOTALL)


@dataclass
class _Token:
    kind: str
    start: int
    end: int
    text: bytes

    def ident(self) -> bytes | None:
        """The identifier's value (unquoted names fold ASCII to lower case, as PostgreSQL does)."""
        if self.kind == "ident":
            return self.text.lower()  # bytes.lower() folds ASCII only, like PostgreSQL in UTF-8
        if self.kind == "qident":
            return self.text[1:-1].replace(b'""', b'"')
        return None

    def keyword(self) -> bytes | None:
        return self.text.lower() if self.kind == "ident" else None

    def literal(self) -> bytes | None:
        if self.kind == "string":
            return self.text[1:-1].replace(b"''", b"'")
        return None


def _tokens(text: bytes) -> list[_Token]:
    """PostgreSQL's lexical tokens of ``text`` (standard_conforming_strings on), comments and spaces dropped."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        kind = match.lastgroup
        end = match.end()
        if kind == "block":
            depth, end = 1, pos + 2
            while depth:
                nxt = _COMMENT_EDGE.search(text, end)
                if nxt is None:
                    raise RestoreIntoError("the restore script has an unterminated comment; nothing was restored")
                depth += 1 if nxt.group() == b"/*" else -1
                end = nxt.end()
        elif kind == "dollar":
            close = text.find(match.group(), end)
            if close < 0:
                raise RestoreIntoError("the restore script has an unterminated $-quoted string; nothing was restored")
            end = close + len(match.group())
        elif kind == "other" and match.group() in (b"'", b'"'):
            raise RestoreIntoError("the restore script has an unterminated quoted string; nothing was restored")
        if kind not in ("space", "comment", "block"):
            tokens.append(_Token(kind, pos, end, text[pos:end]))
        pos = end
    return tokens


def _statements(tokens: list[_Token]) -> Iterable[list[_Token]]:
    statement: list[_Token] = []
    for token in tokens:
        if token.kind == "other" and token.text == b";":
            if statement:
                yield statement
            statement = []
        else:
            statement.append(token)
    if statement:
        yield statement


@dataclass
class SchemaRewriter:
    """Rewrites references to ``source`` into references to ``target`` in SQL text (never in COPY data)."""

    source: str
    target: str
    lock_timeout_ms: int
    schemas_created: int = 0
    rewrites: dict[str, int] = field(default_factory=lambda: {"qualified": 0, "schema": 0, "literal": 0})

    def __post_init__(self) -> None:
        self._source = self.source.encode()
        self._target_ident = quote_ident(self.target).encode()

    def refuse(self, what: str) -> RestoreIntoError:
        return RestoreIntoError(
            f"the backup's script {what}: it cannot be restored under another schema name without touching "
            f"{self.source!r}; nothing was restored"
        )

    def sql(self, text: bytes) -> bytes:
        edits: list[tuple[int, int, bytes]] = []
        for statement in _statements(_tokens(text)):
            edits += self._statement(statement)
        return _apply(text, edits)

    def copy(self, header: bytes) -> tuple[bytes, str]:
        """The rewritten COPY statement, and the name of the table it fills."""
        tokens = _tokens(header)
        edits = self._statement(tokens)
        # COPY <schema>.<table> (...) FROM stdin: the rows must go to the new schema, nowhere else.
        if len(tokens) < 4 or tokens[1].ident() != self._source or tokens[2].text != b"." or not tokens[3].ident():
            raise self.refuse(f"copies rows into a table outside the schema ({header[:80]!r})")
        return _apply(header, edits), tokens[3].ident().decode()

    def _statement(self, tokens: list[_Token]) -> list[tuple[int, int, bytes]]:
        words = [t.keyword() for t in tokens]
        if words[:2] == [b"set", b"lock_timeout"] or words[:3] == [b"set", b"session", b"lock_timeout"]:
            return [(tokens[0].start, tokens[-1].end, f"SET lock_timeout = '{self.lock_timeout_ms}ms'".encode())]
        if b"standard_conforming_strings" in words:
            value = tokens[-1].literal() or tokens[-1].text
            if value.lower() in (b"off", b"false", b"0", b"no"):
                raise self.refuse("turns standard_conforming_strings off")
        creates_schema = words[:2] == [b"create", b"schema"]
        edits: list[tuple[int, int, bytes]] = []
        leftover = False  # the name still appears, unrewritten (fine, unless search_path is set)
        for i, token in enumerate(tokens):
            before = tokens[i - 1] if i else None
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            value = token.ident()
            if value is not None:
                if value != self._source:
                    if creates_schema and _names_schema(tokens, i):
                        raise self.refuse(f"creates schema {value.decode(errors='replace')!r}")
                    continue
                qualifier = (
                    after is not None and after.text == b"." and not (before is not None and before.text == b".")
                )
                if qualifier:
                    edits.append((token.start, token.end, self._target_ident))
                    self.rewrites["qualified"] += 1
                elif _names_schema(tokens, i):
                    edits.append((token.start, token.end, self._target_ident))
                    self.rewrites["schema"] += 1
                    self.schemas_created += creates_schema
                else:
                    leftover = True  # a column, table or alias that happens to bear the name
            elif token.kind in ("string", "estring"):
                edit = self._literal(tokens, i)
                if edit is not None:
                    edits.append(edit)
                elif self._source in token.text.lower():
                    leftover = True
            elif token.kind == "dollar" and self._source in token.text.lower():
                raise self.refuse("holds a $-quoted body (a function?) that names the schema")
        if leftover and (b"search_path" in words or any(b"search_path" in (t.literal() or b"") for t in tokens)):
            raise self.refuse("sets a search_path naming the schema")
        return edits

    def _literal(self, tokens: list[_Token], i: int) -> tuple[int, int, bytes] | None:
        """A string naming an object (``'x.seq'::regclass``, ``setval('x.seq', ...)``): rewrite its qualifier."""
        token = tokens[i]
        cast = _cast_type(tokens, i)
        sequence_call = (
            i >= 2
            and tokens[i - 1].text == b"("
            and tokens[i - 2].keyword() in _SEQUENCE_FUNCTIONS
            and not (i >= 4 and tokens[i - 3].text == b"." and tokens[i - 4].ident() != b"pg_catalog")
        )
        if cast not in _REG_TYPES and not sequence_call:
            return None
        if token.kind != "string":
            raise self.refuse(f"names an object in an E'' string ({token.text[:60]!r})")
        value = token.literal()
        match = _NAME_IN_LITERAL.fullmatch(value)
        if cast == b"regnamespace":
            if (_literal_name(value) if match is None else None) == self._source:
                return (token.start, token.end, _sql_string(self._target_ident))
            return None
        first = None if match is None else _unquote(match.group(1), match.group(2))
        if first != self._source:
            if sequence_call:  # setval/nextval are not rolled back: never on another schema's sequence
                raise self.refuse(f"changes a sequence outside the schema ({value[:80]!r})")
            return None
        self.rewrites["literal"] += 1
        return (token.start, token.end, _sql_string(self._target_ident + match.group(3)))


def _names_schema(tokens: list[_Token], i: int) -> bool:
    """True when the identifier at ``i`` follows the keyword SCHEMA (``CREATE SCHEMA [IF NOT EXISTS] x``)."""
    if [t.keyword() for t in tokens[i : i + 3]] == [b"if", b"not", b"exists"]:
        return False
    j = i - 1
    if j >= 2 and [t.keyword() for t in tokens[j - 2 : j + 1]] == [b"if", b"not", b"exists"]:
        j -= 3
    return j >= 0 and tokens[j].keyword() == b"schema" and not (i + 1 < len(tokens) and tokens[i + 1].text == b".")


def _cast_type(tokens: list[_Token], i: int) -> bytes | None:
    """The type a literal is cast to with ``::`` (``::regclass``, ``::pg_catalog.regclass``), if any."""
    if i + 2 >= len(tokens) or tokens[i + 1].kind != "cast":
        return None
    name = tokens[i + 2].ident()
    if name == b"pg_catalog" and i + 4 < len(tokens) and tokens[i + 3].text == b".":
        name = tokens[i + 4].ident()
    return name


def _unquote(quoted: bytes | None, bare: bytes | None) -> bytes:
    return quoted.replace(b'""', b'"') if quoted is not None else bare.lower()


def _literal_name(value: bytes) -> bytes | None:
    match = re.fullmatch(_NAME, value, re.DOTALL)
    return None if match is None else _unquote(match.group(1), match.group(2))


def _sql_string(value: bytes) -> bytes:
    return b"'" + value.replace(b"'", b"''") + b"'"


def _apply(text: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    if not edits:
        return text
    out, pos = [], 0
    for start, end, replacement in sorted(edits):
        out += [text[pos:start], replacement]
        pos = end
    out.append(text[pos:])
    return b"".join(out)


def rewrite_schema(text: bytes, *, source: str, target: str, lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS) -> bytes:
    """``text`` (SQL written by pg_restore) with its references to schema ``source`` moved to ``target``."""
    return SchemaRewriter(source, target, lock_timeout_ms).sql(text)


class RewritingCursor:
    """The cursor ``run_script`` is given: its SQL and COPY statements are rewritten, COPY data passes untouched.

    Only ``execute`` and ``copy`` exist: if ``run_script`` ever used anything else of its
    cursor, that would fail loudly instead of bypassing the rewrite. ``copied`` holds the
    rows each table received, as the server counted them for each finished COPY.
    """

    __slots__ = ("_cursor", "_rewriter", "copied")

    def __init__(self, cursor: psycopg.Cursor, rewriter: SchemaRewriter) -> None:
        self._cursor, self._rewriter = cursor, rewriter
        self.copied: dict[str, int] = {}

    def execute(self, query: bytes) -> psycopg.Cursor:
        return self._cursor.execute(self._rewriter.sql(query))

    @contextlib.contextmanager
    def copy(self, statement: bytes) -> Iterator[psycopg.Copy]:
        rewritten, table = self._rewriter.copy(statement)
        with self._cursor.copy(rewritten) as copy:
            yield copy
        # The COPY's command tag ("COPY <rows>"): what the server stored, not what was sent.
        self.copied[table] = self.copied.get(table, 0) + self._cursor.rowcount


# --- Checks inside the restoring transaction --------------------------------------------

# Objects of one schema (their classid and oid), for the dependency check.
