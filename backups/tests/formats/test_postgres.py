"""Finding client tools that match the database server."""

import glob
import shutil

import pytest

from backups.postgres import PgToolsError, find_pg_tools, server_major_version, tool_version

pytestmark = pytest.mark.django_db


def test_found_tools_are_at_least_the_server_version():
    tools = find_pg_tools()
    server_major, _ = server_major_version()
    assert tools.major >= server_major
    for exe in (tools.pg_dump, tools.pg_restore, tools.psql):
        assert tool_version(exe)[0] == tools.major


def test_older_tools_are_refused_with_both_versions_named(tmp_path):
    # Real binaries: Debian's PostgreSQL 15 client tools against a server said to be 16+.
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert debian, "Debian's PostgreSQL client tools are expected on this machine"
    directory = debian[0]
    major, text = tool_version(f"{directory}/pg_dump")
    with pytest.raises(PgToolsError) as excinfo:
        find_pg_tools(bin_dir=directory, server_major=major + 1)
    message = str(excinfo.value)
    assert f"PostgreSQL {major + 1}" in message and f"pg_dump {text}" in message
    assert "BACKUPS_PG_BIN_DIR" in message


def test_a_folder_without_the_tools_is_refused(tmp_path):
    (tmp_path / "pg_dump").write_text("not a program")
    with pytest.raises(PgToolsError, match="No pg_dump/pg_restore/psql found in BACKUPS_PG_BIN_DIR"):
        find_pg_tools(bin_dir=str(tmp_path), server_major=15)


def test_the_oldest_sufficient_version_is_preferred(tmp_path):
    # With every folder allowed and a low server version, the pick is the lowest major >= server.
    tools = find_pg_tools(bin_dir="", server_major=1)
    from backups.postgres import _bundled_dirs

    dirs = glob.glob("/usr/lib/postgresql/*/bin") + [str(d) for d in _bundled_dirs()]
    candidates = [tool_version(f"{d}/pg_dump")[0] for d in dirs]
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(tool_version(on_path)[0])
    assert tools.major == min(candidates)


def test_tools_are_chosen_to_read_the_backup_not_only_to_match_the_server():
    tools = find_pg_tools()
    newest = find_pg_tools(server_major=1, dump_version=f"{tools.major}.0")
    assert newest.major >= tools.major  # an archive of pg_dump N needs pg_restore N or newer
    with pytest.raises(PgToolsError) as refused:
        find_pg_tools(bin_dir=str(tools.bin_dir), server_major=tools.major, dump_version=f"{tools.major + 1}.3")
    message = str(refused.value)
    assert f"made with pg_dump {tools.major + 1}.3, which pg_restore {tools.version}" in message
    assert f"set BACKUPS_PG_BIN_DIR to PostgreSQL {tools.major + 1} (or newer) client tools" in message


@pytest.mark.django_db
def test_pg_dumps_session_plans_without_nested_loops_and_keeps_the_databases_own_options(monkeypatch):
    """pg_dump's catalog queries run as hash joins (issue 28: 8x faster at 1,000 clinics), and
    options the deployment gives its connections (``DATABASES OPTIONS``) still reach pg_dump."""
    import subprocess

    from django.db import connection

    from backups.formats.pg.dump import pg_dump_environment

    options = {**connection.settings_dict.get("OPTIONS", {}), "options": "-c statement_timeout=4321"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    env = pg_dump_environment()
    shown = subprocess.run(
        [find_pg_tools().psql, "-XAtc", "SHOW enable_nestloop; SHOW statement_timeout"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["off", "4321ms"]
