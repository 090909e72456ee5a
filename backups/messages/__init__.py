"""The message catalogue: every sentence an error or refusal can show, by message id, and ``render()``.

The texts are marked for makemessages (``gettext_noop``) and translated only by ``render()``,
i.e. when a person reads them, in their language. Each family of ids lives in its own module;
``MESSAGES`` merges them here, explicitly, once: nothing adds to the catalogue at import time
elsewhere (``backups/tests/test_messages.py`` checks that no id is defined twice and that every
id raised exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext

from backups.messages import api, archive, clone, drills, formats, jobs, media, restore, selective, upload

FAMILIES: dict[str, Mapping[str, str]] = {
    "jobs": jobs.MESSAGES,
    "restore": restore.MESSAGES,
    "archive": archive.MESSAGES,
    "media": media.MESSAGES,
    "selective": selective.MESSAGES,
    "clone": clone.MESSAGES,
    "drills": drills.MESSAGES,
    "formats": formats.MESSAGES,
    "upload": upload.UPLOAD_MESSAGES,
    "api": api.API_MESSAGES,
}

MESSAGES: dict[str, str] = {
    **jobs.MESSAGES,
    **restore.MESSAGES,
    **archive.MESSAGES,
    **media.MESSAGES,
    **selective.MESSAGES,
    **clone.MESSAGES,
    **drills.MESSAGES,
    **formats.MESSAGES,
    **upload.UPLOAD_MESSAGES,
    **api.API_MESSAGES,
}


def render(message_id: str, params: Mapping[str, Any] | None = None) -> str:
    """The sentence for ``message_id`` in the active language, with its parameters."""
    template = MESSAGES.get(message_id)
    values = {key: _render_param(value) for key, value in (params or {}).items()}
    if template is None:  # a code this release does not know (a row written by a newer one)
        return f"{message_id} {values}" if values else message_id
    text = gettext(template)
    try:
        return text % values if values else text
    except (KeyError, TypeError, ValueError):  # a translation with a broken placeholder
        return template % values


def _render_param(value: Any) -> Any:
    if isinstance(value, Mapping) and "message_id" in value:
        return render(value["message_id"], value.get("params"))
    return value
