"""docs/archive-format.md itself: every shell block is tagged and safe to paste, and the versions it
states are those of an archive the application writes.
"""

from __future__ import annotations

import re

import pytest

from backups import archive
from backups.keys.clinic import identities_held
from backups.tests.archive.helpers import (
    DOC,
    fenced_blocks,
    make_backup,
)
from backups.tests.helpers import stored_path

VARIABLES = {"ARCHIVE", "DEPLOYMENT_KEY", "CLINIC_KEY", "KEYS", "WORK", "PG_BIN", "DATABASE_URL", "SCHEMA"}
BLOCKS = {
    "variables",
    "clinic-key",
    "list",
    "manifest",
    "verify",
    "media-extract",
    "toc",
    "restore",
    "drop-previous",
    "json-summary",
}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh", "shell-session"}


# --- The document's own shape ------------------------------------------------------------


def test_every_shell_block_of_the_doc_is_tagged_and_safe_to_paste():
    text = DOC.read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    for fenced in blocks:
        where = f"{DOC.name}:{fenced.line}"
        if fenced.language in SHELL_LANGUAGES:
            assert fenced.language == "bash" and fenced.tag, f"{where}: a shell block without <!-- doc-test: … -->"
        assert not (fenced.tag and fenced.language != "bash"), f"{where}: a doc-test block must be ```bash"
    tagged = {fenced.tag: fenced.body for fenced in blocks if fenced.tag}
    assert set(tagged) == BLOCKS, "a block was added or removed: give it a test and update BLOCKS"
    declared = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", tagged["variables"], re.M))
    assert declared == VARIABLES, f"the doc declares {sorted(declared)}: the test sets {sorted(VARIABLES)}"
    for name, body in tagged.items():
        used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", body))
        assert used <= VARIABLES, f"block {name} uses undeclared variables {sorted(used - VARIABLES)}"
        if name == "variables":
            continue
        lines = body.splitlines()
        assert lines[:2] == ["(", "set -euo pipefail"] and lines[-1] == ")", (
            f"block {name}: not ( set -euo pipefail … )"
        )
        assert "\t" not in body, f"block {name} has a tab (a terminal would complete it when pasted)"
        assert "!" not in body.replace("!=", ""), f"block {name} has a ! that bash would history-expand"


@pytest.mark.django_db
def test_the_versions_the_doc_states_are_those_of_an_archive_the_application_writes():
    """The doc's title, its "Versions" paragraph and its "Layers" list state the versions that
    a backup made now carries (read from its manifest), and no other current version."""
    backup = make_backup("clinica")
    path = stored_path(backup.storage_name)
    with open(path, "rb") as handle, archive.open_archive(handle, identities=identities_held()) as reader:
        manifest = dict(reader.manifest)
    versions = {field: manifest[field] for field in ("archive_version", "format_version")}
    assert isinstance(manifest.get("media"), list)  # the newest format, the one with the clinic's files
    text = DOC.read_text(encoding="utf-8")
    title = re.match(r"# Backup archive format, version (\d+)", text)
    assert title and int(title.group(1)) == versions["archive_version"], text.splitlines()[0]
    for field, version in versions.items():
        stated = {int(n) for n in re.findall(rf'"{field}": (\d+)', text)}
        assert stated == {version}, f'the doc states "{field}": {sorted(stated)}; archives written say {version}'
    layers = text[text.index("- **tar** members") : text.index("### The manifest's media fields")]
    for field, version in versions.items():
        assert f'"{field}": {version}' in layers, f"the Layers list does not say {field} {version}"
