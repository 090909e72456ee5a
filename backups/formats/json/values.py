"""Checking one value of an uploaded fixture: the check of its column kind (``kinds.KINDS``), per field.

Each check gives the value as the payload writer would write it, or raises ``BadValue`` with a
reason (a message id and parameters) that the converter puts in the refusal, naming the
record and the field.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from typing import Any

from django.db import models

from backups.formats.json.kinds import KINDS
from backups.formats.json.reasons import BadValue, json_type

__all__ = ["BadValue", "json_type", "normalizer"]


def normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    """A function checking one non-null value of ``model_field`` and giving it as the database
    would give it to the json payload writer (see ``Kind.encode`` in ``kinds.KINDS``).

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
        with contextlib.suppress(BadValue):
            allowed[normalize(value)] = value

    def choice(value: Any) -> Any:
        result = normalize(value)
        if result not in allowed and not (model_field.blank and result in model_field.empty_values):
            raise BadValue(
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
                raise BadValue("upload.invalid_value.file_name.folder", value=name[:100], folder=folder)
            raise BadValue("upload.invalid_value.file_name.media", value=name[:100])
        return name

    return file_name


def _value_normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    """The check of one column kind for ``model_field`` (its target field's limits for a relation)."""
    target = model_field
    while target.is_relation:
        target = target.target_field
    column_kind = KINDS.get(kind)
    if column_kind is None:
        raise ValueError(f"unknown column kind {kind!r}")  # json_payload refuses such fields first
    return column_kind.checker(model_field, target)
