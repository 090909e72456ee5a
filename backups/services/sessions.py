"""Who stays signed in across a restore: the clinic's live sessions, carried into the restored data.

A pg restore replaces the clinic's whole schema, ``django_session`` included: without care
the backup's sessions (of the day it was taken) come back, so everyone signed in now is
signed out, the admin who is watching the restore among them, and sessions that were
signed out since the backup are signed in again. Instead, in the restore's own transaction,
the restored ``django_session`` rows are replaced by the live ones (:func:`take_live_sessions`
before, :func:`put_sessions` after). A json restore loads only its payload's tables (by
default the dental app's: no users, no sessions): it does the same only when its payload holds
the session or the user table.

Each carried session is checked as Django checks it on every request
(``django.contrib.auth.get_user`` with ``ModelBackend``): its user exists in the restored
data, may sign in (``is_active``), and the session's auth hash matches that user's password
hash (an HMAC of it, under ``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS``). Django would
sign such a session out on its next request anyway, without a word; a session that was valid
before the restore and is not after it is therefore replaced, under the same key, by a
signed-out one that says which restore did it (``SIGNED_OUT_KEY``): the login page reads it
(:func:`signed_out_by_restore`), explains, and leads back to the restore's page. Sessions that
were already invalid, or hold no user, are carried as they are.
"""

from __future__ import annotations

import dataclasses
import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

from backups.formats.base import quote_ident

SIGNED_OUT_KEY = "respaldo_signed_out_by_restore"  # {"restore": id, "backup": id} in a session signed out by one


@dataclasses.dataclass(frozen=True)
class LiveSessions:
    """The clinic's unexpired sessions before a restore, and which of them were signed in then."""

    rows: list[tuple[str, str, datetime.datetime]]  # (session_key, session_data, expire_date)
    signed_in: frozenset[str]  # keys of the sessions whose user was valid before the restore


@dataclasses.dataclass(frozen=True)
class CarriedSessions:
    """What :func:`put_sessions` did: sessions carried as they were, and sessions signed out."""

    kept: int
    signed_out: int


def _store_class() -> type[SessionBase] | None:
    """The configured session store, if it keeps sessions in the clinic's schema (db, cached_db)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return store if issubclass(store, DatabaseSessionStore) else None


def sign_in_tables() -> set[str]:
    """The tables a restore must not replace without carrying the live sessions: sessions and users."""
    store = _store_class()
    return {get_user_model()._meta.db_table, *([_session_table(store)] if store is not None else [])}


def _table_exists(cursor: Any, schema: str, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{quote_ident(schema)}.{quote_ident(table)}"])
    return bool(cursor.fetchone()[0])


def _session_table(store: type[SessionBase]) -> str:
    return store.get_model_class()._meta.db_table


def _users_who_may_sign_in(cursor: Any, schema: str, user_ids: set[Any]) -> dict[Any, Any]:
    """{pk: unsaved user with that pk and password hash} for the active users of ``schema`` among ``user_ids``."""
    user_model = get_user_model()
    opts = user_model._meta
    if not user_ids or not _table_exists(cursor, schema, opts.db_table):
        return {}
    password = opts.get_field("password").column
    has_active = any(f.name == "is_active" for f in opts.concrete_fields)
    active = f", {quote_ident(opts.get_field('is_active').column)}" if has_active else ""
    cursor.execute(
        f"SELECT {quote_ident(opts.pk.column)}, {quote_ident(password)}{active} "  # noqa: S608 (identifiers quoted)
        f"FROM {quote_ident(schema)}.{quote_ident(opts.db_table)} WHERE {quote_ident(opts.pk.column)} = ANY(%s)",
        [list(user_ids)],
    )
    users = {}
    for row in cursor.fetchall():
        if has_active and not row[2]:
            continue  # ModelBackend.user_can_authenticate: an inactive user is signed out
        users[row[0]] = user_model(pk=row[0], password=row[1])
    return users


def _session_user(data: dict) -> Any | None:
    """The pk of the user a decoded session is signed in as (as the user table holds it), or None."""
    if SESSION_KEY not in data or data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    try:
        return get_user_model()._meta.pk.to_python(data[SESSION_KEY])
    except Exception:  # noqa: BLE001 - a session Django itself could not use
        return None


def _hash_matches(user: Any, session_hash: str | None) -> bool:
    """Django's own check of a session's auth hash (current secret, then the fallbacks)."""
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(session_hash, other) for other in user.get_session_auth_fallback_hash())


def _valid_sessions(cursor: Any, schema: str, decoded: dict[str, dict]) -> set[str]:
    """Keys of the sessions in ``decoded`` ({key: data}) that ``schema``'s users keep signed in."""
    wanted = {key: user for key, data in decoded.items() if (user := _session_user(data)) is not None}
    users = _users_who_may_sign_in(cursor, schema, set(wanted.values()))
    return {
        key
        for key, user_id in wanted.items()
        if user_id in users and _hash_matches(users[user_id], decoded[key].get(HASH_SESSION_KEY))
    }


def _decode_all(store: type[SessionBase], rows: list[tuple[str, str, datetime.datetime]]) -> dict[str, dict]:
    reader = store()
    return {key: reader.decode(data) for key, data, _expires in rows}


def take_live_sessions(cursor: Any, schema: str) -> LiveSessions | None:
    """The unexpired sessions of ``schema``, read in the caller's transaction (None: it keeps none).

    Locks the session table against writes (EXCLUSIVE: readers go on) until the transaction
    ends, so no session is added or changed between this read and the swap.
    """
    store = _store_class()
    if store is None or not _table_exists(cursor, schema, _session_table(store)):
        return None
    table = f"{quote_ident(schema)}.{quote_ident(_session_table(store))}"
    cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    cursor.execute(
        f"SELECT session_key, session_data, expire_date FROM {table} WHERE expire_date > now()"  # noqa: S608
    )
    rows = [tuple(row) for row in cursor.fetchall()]
    return LiveSessions(rows=rows, signed_in=frozenset(_valid_sessions(cursor, schema, _decode_all(store, rows))))


def put_sessions(
    cursor: Any, schema: str, live: LiveSessions | None, *, restore_id: int, backup_id: int
) -> CarriedSessions | None:
    """Replace the restored sessions of ``schema`` with ``live`` ones, in the caller's transaction.

    A session valid before the restore and not in the restored data (its user is gone, inactive
    or has another password) is replaced under the same key by one that is signed out and names
    the restore (``SIGNED_OUT_KEY``). Returns what was done, or None when there was nothing to carry.
    """
    store = _store_class()
    if live is None or store is None or not _table_exists(cursor, schema, _session_table(store)):
        return None
    decoded = _decode_all(store, live.rows)
    still_valid = _valid_sessions(cursor, schema, decoded)
    note = store().encode({SIGNED_OUT_KEY: {"restore": restore_id, "backup": backup_id}})
    rows, signed_out = [], 0
    for key, data, expires in live.rows:
        if key in live.signed_in and key not in still_valid:
            rows.append((key, note, expires))
            signed_out += 1
        else:
            rows.append((key, data, expires))
    table = f"{quote_ident(schema)}.{quote_ident(_session_table(store))}"
    cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - the backup's sessions: of another time
    if rows:
        cursor.executemany(
            f"INSERT INTO {table} (session_key, session_data, expire_date) VALUES (%s, %s, %s)",  # noqa: S608
            rows,
        )
    return CarriedSessions(kept=len(rows) - signed_out, signed_out=signed_out)


def signed_out_by_restore(request: HttpRequest) -> dict | None:
    """{"restore": id, "backup": id} when this browser's session was signed out by a restore, else None."""
    session = getattr(request, "session", None)
    note = session.get(SIGNED_OUT_KEY) if session is not None else None
    if not isinstance(note, dict) or not all(isinstance(note.get(k), int) for k in ("restore", "backup")):
        return None
    return note


def forget_signed_out(request: HttpRequest) -> None:
    """Once signed in again, the session no longer needs to say why it was signed out."""
    request.session.pop(SIGNED_OUT_KEY, None)
