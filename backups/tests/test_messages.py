"""The message catalogue (backups/messages/): every id the product uses exists, and reads in Spanish.

The product code is read with ``ast``, not imported: a message id is the literal second
argument (or ``message_id=``) of a call to a ``RespaldoError`` subclass or ``api_error``, the
code itself when there is none, the first argument of ``JsonPayloadError``, ``BadValue``,
``render`` or ``message_param``, the ``"message_id"`` of a literal record ``{"message_id": ...}``,
and the ``code`` class attribute of the errors below the services (it is their message id once
translated). A literal is also found in either branch of ``a if condition else b``.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import translation

from backups import messages
from backups.exceptions import RespaldoError, translated
from backups.messages import FAMILIES, MESSAGES, render

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("backups", "clinics", "dental", "clinic_site")

# Calls whose first argument is a message id.
ID_FIRST = {"JsonPayloadError", "BadValue", "render", "message_param"}
# Calls shaped like RespaldoError(code, message_id=None, /, **params), besides its subclasses.
CODE_THEN_ID = {"api_error"}

# Texts that read the same in Spanish (or hold nothing to translate): gettext leaves them as they are.
SAME_IN_SPANISH = {
    "upload.text",  # "%(text)s"
    "upload.texts",  # "%(first)s %(second)s"
    "upload.sentence",  # "%(text)s."
    "upload.kind.null",  # JSON's own words
    "upload.kind.true_false",
    "upload.django.ipv4",  # Django's own messages, the same in its Spanish catalogue
    "upload.django.ipv6",
}


def _product_files() -> Iterator[Path]:
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or "migrations" in parts:
                continue
            yield path


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in _product_files()}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _respaldo_error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """RespaldoError and every class deriving from it (by name, to a fixed point)."""
    classes = {"RespaldoError"}
    grew = True
    while grew:
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in classes
                    and any(_name(base) in classes for base in node.bases)
                ):
                    classes.add(node.name)
                    grew = True
    return classes


def _literals(node: ast.expr | None) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def used_ids() -> dict[str, str]:
    """Every literal message id of the product code: {id: "path:line" of one use}."""
    trees = _trees()
    errors = _respaldo_error_classes(trees) | CODE_THEN_ID
    found: dict[str, str] = {}
    for path, tree in trees.items():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            ids: list[str] = []
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, ast.Assign) and [_name(t) for t in statement.targets] == ["code"]:
                        ids += _literals(statement.value)
            elif isinstance(node, ast.Call):
                name = _name(node.func)
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                if name in errors and node.args and not isinstance(node.args[0], ast.Starred):
                    if "message_id" in keywords:
                        ids += _literals(keywords["message_id"])
                    elif len(node.args) >= 2:
                        ids += _literals(node.args[1])
                    else:
                        ids += _literals(node.args[0])  # the code is the message id
                elif name in ID_FIRST and node.args:
                    ids += _literals(node.args[0])
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if _literals(key) == ["message_id"]:
                        ids += _literals(value)
            for message_id in ids:
                found.setdefault(message_id, f"{where}:{node.lineno}")
    return found


def test_the_scan_finds_the_ids_of_every_family():
    """The scan itself works: it finds ids raised in each way (else the next test proves nothing)."""
    used = used_ids()
    assert {"clinic_busy_backup", "drill_waiting", "json.empty", "json.reason.no_pk", "api_no_file"} <= used.keys()
    assert {"clone_schema_taken_clinic", "upload.natural_keys", "selective_undo_already", "unexpected"} <= used.keys()
    assert {"tampered", "storage_failed", "json_payload", "upload.invalid_value.too_long"} <= used.keys()
    assert len(used) > 180


def test_every_message_id_used_exists():
    missing = {message_id: where for message_id, where in used_ids().items() if message_id not in MESSAGES}
    assert not missing, f"message ids used but not in backups.messages.MESSAGES: {missing}"


def test_a_removed_id_is_caught(monkeypatch):
    """Removing a message from the catalogue makes the check above fail."""
    monkeypatch.delitem(MESSAGES, "drill_waiting")
    assert "drill_waiting" in used_ids()
    assert "drill_waiting" not in MESSAGES
    with pytest.raises(AssertionError, match="drill_waiting"):
        test_every_message_id_used_exists()


def test_no_id_is_defined_twice():
    counts = Counter(message_id for family in FAMILIES.values() for message_id in family)
    assert [message_id for message_id, count in counts.items() if count > 1] == []
    assert len(MESSAGES) == sum(len(family) for family in FAMILIES.values())


def test_every_family_is_merged():
    """Each module of the package is one family of ``FAMILIES`` (none forgotten in __init__)."""
    modules = {path.stem for path in Path(messages.__file__).parent.glob("*.py")} - {"__init__"}
    assert modules == FAMILIES.keys()


def test_nothing_fills_the_catalogue_at_import_time():
    """No module outside backups/messages/ adds to MESSAGES (the catalogue must not depend on imports)."""
    writes = []
    for path, tree in _trees().items():
        if path.parent.name == "messages":
            continue
        for node in ast.walk(tree):
            mutating = ("update", "setdefault", "__setitem__", "pop")
            if isinstance(node, ast.Attribute) and node.attr in mutating and _name(node.value) == "MESSAGES":
                writes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Subscript) and _name(target.value) == "MESSAGES":
                        writes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert writes == []


def test_every_message_reads_in_spanish():
    with translation.override("es"):
        untranslated = {
            message_id: text
            for message_id, text in MESSAGES.items()
            if message_id not in SAME_IN_SPANISH and translation.gettext(text) == text
        }
    assert untranslated == {}


def test_the_texts_the_same_in_spanish_are_still_in_the_catalogue():
    assert MESSAGES.keys() >= SAME_IN_SPANISH


def test_the_json_format_sentences_end_with_a_full_stop():
    """ "json.nothing_restored" follows any of them with another sentence, in either language."""
    sentences = {key: text for key, text in messages.formats.MESSAGES.items() if not key.startswith("json.reason.")}
    for language in ("en", "es"):
        with translation.override(language):
            assert [key for key, text in sentences.items() if not translation.gettext(text).endswith(".")] == []


def test_a_json_complaint_is_rendered_in_the_readers_language():
    record = {"message_id": "json.nothing_restored", "params": {"reason": {"message_id": "json.empty", "params": {}}}}
    with translation.override("en"):
        assert render("json_payload", {"detail": record}) == (
            "The backup's JSON payload cannot be restored: The backup's data is empty. Nothing was restored."
        )
    with translation.override("es"):
        assert render("json.nothing_restored", record["params"]) == (
            "Los datos del respaldo están vacíos. No se restauró nada."
        )


class _DiskFull(Exception):
    """Like the storage's error: a code, and a tool's detail in English."""

    code = "storage_failed"


class _BadLine(Exception):
    """Like the json format's error: a code, and a message of the catalogue."""

    code = "json_payload"

    def __init__(self, message_id: str, /, **params) -> None:
        super().__init__(message_id)
        self.message_id, self.params = message_id, params


def test_a_service_boundary_translates_an_error_with_a_code():
    """translated(): an error with a code leaves as a RespaldoError that is still of its own class."""
    with pytest.raises(RespaldoError) as storage, translated():
        raise _DiskFull("disk full")
    assert isinstance(storage.value, _DiskFull) and isinstance(storage.value.__cause__, _DiskFull)
    assert storage.value.record == {
        "code": "storage_failed",
        "message_id": "storage_failed",
        "params": {"detail": "disk full"},
    }
    with translation.override("en"):
        assert str(storage.value) == "The backup storage failed: disk full"

    with pytest.raises(RespaldoError) as payload, translated():
        raise _BadLine("json.line_not_utf8", line=3)
    assert payload.value.params == {"detail": {"message_id": "json.line_not_utf8", "params": {"line": 3}}}
    with translation.override("es"):
        assert str(payload.value).endswith("La línea 3 del respaldo no es texto UTF-8.")

    with pytest.raises(KeyError), translated():  # no code: not a refusal, it passes unchanged
        raise KeyError("x")
