"""The embedded PostgreSQL server used when ``DATABASE_URL`` is not set.

It comes from the ``pgserver`` package (PostgreSQL 16 with its client tools), keeps its
data in the git-ignored local folder and listens on a Unix socket only. The server is
shared by every process of the project (web, worker, tests) and stops when the last of
them exits.
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "respaldo"


@dataclass(frozen=True)
class EmbeddedServer:
    """Where to reach the embedded server and its matching client binaries."""

    socket_dir: Path
    port: int
    user: str
    bin_dir: Path


def _prepare_runtime_dir(local_dir: Path) -> None:
    # pgserver keeps its lock file under XDG_RUNTIME_DIR, which must be a private folder.
    if os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        return
    runtime = local_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def start(local_dir: Path) -> EmbeddedServer:
    """Start (or attach to) the embedded server whose data lives in ``local_dir/pgdata``.

    Creates the project database on first start. Safe to call from several processes.
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    _prepare_runtime_dir(local_dir)
    import pgserver  # imported late: it reads XDG_RUNTIME_DIR at import time
    from pgserver._commands import POSTGRES_BIN_PATH

    _forget_dead_processes(local_dir / "pgdata")
    server = pgserver.get_server(local_dir / "pgdata", cleanup_mode="stop")
    # Runs before pgserver's own exit hook (atexit is last-in, first-out), so that a process
    # killed earlier (SIGKILL leaves its pid behind) does not keep the server up for ever.
    atexit.register(_forget_dead_processes, local_dir / "pgdata")
    info = server.get_postmaster_info()
    embedded = EmbeddedServer(
        socket_dir=Path(info.socket_dir),
        port=int(info.port or 5432),
        user="postgres",
        bin_dir=Path(POSTGRES_BIN_PATH),
    )
    _ensure_database(embedded)
    return embedded


def _forget_dead_processes(pgdata: Path) -> None:
    """Drop the pids of processes that died without saying goodbye from pgserver's list.

    The server stops when the last process using it exits; pgserver counts users in a file
    that a killed process never leaves.
    """
    import psutil
    from pgserver import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _ensure_database(server: EmbeddedServer) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(server.socket_dir), port=server.port, user=server.user, dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
