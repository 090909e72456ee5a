"""The OpenAPI 3.1 description of ``/api/v1/``, served at ``/api/v1/schema``.

Written by hand, next to the views it describes; ``backups/tests/api/test_api.py`` validates the
document and checks real responses of every operation against it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from backups.api.access import Method, endpoint
from backups.models import Backup, JobStatus

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "Invalid request (see error.code; field errors in error.fields)",
        401: "Not authenticated: no session, or a token that is unknown, revoked or whose user cannot log in",
        403: "Not allowed: the user lacks the permission, the token is read-only, or a session's CSRF failed",
        404: "No such object in this clinic (another clinic's ids are 404 too)",
        409: "Conflict: the clinic is busy, or the backup is not stored",
        410: "The download link expired",
        413: "The upload is larger than the limit",
        429: "Fair use: too many requests with this token, or too many backups/downloads today (Retry-After)",
        503: "The clinic is being restored, or the storage is unavailable (Retry-After)",
    }
    return {str(status): _json(_ref("Error"), words[status]) for status in statuses}


AUTH_ERRORS = (401, 403, 429)
ID = {"type": "integer", "minimum": 1}
WHEN = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "params"],
                "properties": {
                    "code": {"type": "string", "description": "stable reason, for programs"},
                    "message": {"type": "string", "description": "for people, in the request's language"},
                    "params": {"type": "object"},
                    "fields": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                    "field_codes": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        },
    },
    "JobError": {
        "type": ["object", "null"],
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "required": [
            "id",
            "url",
            "status",
            "status_label",
            "finished",
            "phase",
            "phase_label",
            "requested_by",
            "requested_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "error",
        ],
        "properties": {
            "id": ID,
            "url": {"type": "string", "format": "uri"},
            "status": {"enum": JobStatus.values},
            "status_label": {"type": "string"},
            "finished": {"type": "boolean"},
            "phase": {"type": "string"},
            "phase_label": {"type": "string"},
            "requested_by": {"type": "string"},
            "requested_at": {"type": "string", "format": "date-time"},
            "started_at": WHEN,
            "finished_at": WHEN,
            "duration_seconds": {"type": ["number", "null"]},
            "error": _ref("JobError"),
        },
    },
    "Backup": {
        "allOf": [
            _ref("Job"),
            {
                "type": "object",
                "required": [
                    "kind",
                    "format",
                    "note",
                    "bytes",
                    "size",
                    "sha256",
                    "stored",
                    "expired_at",
                    "verified_at",
                    "drill",
                    "legal_hold",
                    "links",
                ],
                "properties": {
                    "kind": {"enum": Backup.Kind.values},
                    "format": {"enum": Backup.Format.values},
                    "note": {"type": "string"},
                    "bytes": {"type": "integer", "description": "bytes written so far (while it runs)"},
                    "size": {"type": ["integer", "null"]},
                    "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                    "stored": {"type": "boolean", "description": "it has a stored file: download and restore work"},
                    "expired_at": WHEN,
                    "verified_at": WHEN,
                    "drill": {
                        "type": ["object", "null"],
                        "properties": {"status": {"enum": ["succeeded", "failed"]}, "at": WHEN},
                    },
                    "legal_hold": {
                        "type": ["object", "null"],
                        "properties": {"since": WHEN, "by": {"type": "string"}, "reason": {"type": "string"}},
                    },
                    "links": {
                        "type": "object",
                        "required": ["download", "link", "restore"],
                        "properties": {
                            name: {"type": ["string", "null"], "format": "uri"}
                            for name in ("download", "link", "restore")
                        },
                    },
                },
            },
        ]
    },
    "BackupDetail": {
        "allOf": [
            _ref("Backup"),
            {
                "type": "object",
                "required": ["tables", "media_files", "media_missing"],
                "properties": {
                    "tables": {
                        "type": "object",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                        "description": "rows per table, from the backup's manifest",
                    },
                    "media_files": {"type": "integer"},
                    "media_missing": {"type": "integer"},
                },
            },
        ]
    },
    "Restore": {
        "allOf": [
            _ref("Job"),
            {
                "type": "object",
                "required": ["backup", "backup_url", "safety_backup", "outcome", "migrated", "note"],
                "properties": {
                    "backup": ID,
                    "backup_url": {"type": "string", "format": "uri"},
                    "safety_backup": {"type": ["integer", "null"], "description": "the way back"},
                    "outcome": {"enum": ["unchanged", "restored", None]},
                    "migrated": {"type": "boolean"},
                    "note": {"type": "string"},
                },
            },
        ]
    },
    "TableChange": {
        "type": "object",
        "required": ["table", "label", "now", "in_backup", "emptied", "removed", "brought_back", "changed"],
        "properties": {
            "table": {"type": "string"},
            "label": {"type": "string"},
            "now": {"type": ["integer", "null"]},
            "in_backup": {"type": ["integer", "null"]},
            "emptied": {"type": "boolean"},
            "removed": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "rows added since the backup, which restoring removes (null: not compared yet)",
            },
            "brought_back": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "rows deleted since the backup, which restoring brings back (null: not compared yet)",
            },
            "changed": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "rows edited since the backup, put back as they were (null: not compared yet)",
            },
        },
    },
    "Differences": {
        "type": "object",
        "description": (
            "The backup compared with the clinic by primary key, by a worker: the figures of the newest "
            "finished comparison (null until one has finished). A read queues a new comparison unless one is "
            "under way or one finished less than a minute ago: read again until comparing is false."
        ),
        "required": ["compared_at", "totals", "patients", "comparing"],
        "properties": {
            "compared_at": WHEN,
            "totals": {
                "type": ["object", "null"],
                "description": "the clinic's records (not users or sessions), summed over the tables",
                "required": ["removed", "brought_back", "changed"],
                "properties": {
                    "removed": {"type": "integer", "minimum": 0},
                    "brought_back": {"type": "integer", "minimum": 0},
                    "changed": {"type": "integer", "minimum": 0},
                },
            },
            "patients": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": (
                    "when only a few records differ, all of them some patients' records: those patients' national "
                    "ids (a selective restore of each may be enough); null otherwise"
                ),
            },
            "comparing": {"type": "boolean", "description": "a newer comparison is waiting for or running in a worker"},
        },
    },
    "RestorePreview": {
        "type": "object",
        "required": ["backup", "confirm", "needs_accept_emptied", "records", "others", "differences"],
        "properties": {
            "backup": ID,
            "confirm": {"type": "string", "description": "the value the restore's confirm field must carry"},
            "needs_accept_emptied": {"type": "boolean"},
            "records": {"type": "array", "items": _ref("TableChange")},
            "others": {"type": "array", "items": _ref("TableChange")},
            "differences": _ref("Differences"),
        },
    },
    "DownloadLink": {
        "type": "object",
        "required": ["url", "expires_at", "filename", "size", "sha256"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "expires_at": {"type": "string", "format": "date-time"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
        },
    },
    "BackupRequest": {
        "type": "object",
        "properties": {
            "format": {"enum": Backup.Format.values, "default": "pg"},
            "note": {"type": "string", "maxLength": 200},
        },
    },
    "RestoreRequest": {
        "type": "object",
        "required": ["confirm"],
        "properties": {
            "confirm": {"type": "string", "description": "the clinic's schema name, exactly"},
            "accept_emptied": {"type": "boolean", "description": "needed when the backup empties tables"},
        },
    },
}


def _page_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["count", "page", "page_size", "pages", "next", "previous", "results"],
        "properties": {
            "count": {"type": "integer"},
            "page": {"type": "integer"},
            "page_size": {"type": "integer"},
            "pages": {"type": "integer"},
            "next": {"type": ["string", "null"], "format": "uri"},
            "previous": {"type": ["string", "null"], "format": "uri"},
            "results": {"type": "array", "items": _ref(name)},
        },
    }


SCHEMAS["BackupPage"] = _page_of("Backup")
SCHEMAS["RestorePage"] = _page_of("Restore")


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID}


PAGING = [
    _query("page", {"type": "integer", "minimum": 1}, "page number, from 1"),
    _query("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, "at most 100 (default 25)"),
]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "contentEncoding": "binary"}}}

PATHS: dict[str, Any] = {
    "/api/v1/backups/": {
        "get": {
            "operationId": "listBackups",
            "summary": "The clinic's backups, newest first",
            "parameters": [
                *PAGING,
                _query("status", {"enum": JobStatus.values}, "job status"),
                _query("kind", {"enum": Backup.Kind.values}, "how it was made"),
                _query("format", {"enum": Backup.Format.values}, "payload format"),
                _query("held", {"enum": ["true", "false"]}, "on legal hold or not"),
                _query("since", {"type": "string"}, "requested on or after (date or date-time)"),
                _query("until", {"type": "string"}, "requested on or before (date or date-time)"),
                _query("q", {"type": "string"}, "search the note and who asked"),
            ],
            "responses": {"200": _json(_ref("BackupPage"), "A page of backups"), **_errors(400, *AUTH_ERRORS)},
        },
        "post": {
            "operationId": "createBackup",
            "summary": "Back up now (needs backups.add_backup)",
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("BackupRequest")}}},
            "responses": {
                "202": _json(_ref("BackupDetail"), "The backup is waiting for a worker (Location: its URL)"),
                **_errors(400, *AUTH_ERRORS, 409, 503),
            },
        },
    },
    "/api/v1/backups/{backup_id}/": {
        "parameters": [_path_id("backup_id")],
        "get": {
            "operationId": "getBackup",
            "summary": "One backup, with its rows per table",
            "responses": {"200": _json(_ref("BackupDetail"), "The backup"), **_errors(*AUTH_ERRORS, 404)},
        },
    },
    "/api/v1/backups/{backup_id}/download/": {
        "parameters": [_path_id("backup_id")],
        "get": {
            "operationId": "downloadBackup",
            "summary": "The backup file (needs backups.download_backup); recorded as a download",
            "responses": {
                "200": {"description": "The archive; X-Respaldo-SHA256 carries its SHA-256", "content": BINARY},
                "302": {"description": "Redirect to a five-minute storage link (S3)"},
                **_errors(*AUTH_ERRORS, 404, 409, 503),
            },
        },
    },
    "/api/v1/backups/{backup_id}/link/": {
        "parameters": [_path_id("backup_id")],
        "post": {
            "operationId": "backupDownloadLink",
            "summary": "A five-minute link that downloads the backup without credentials; recorded as a download",
            "responses": {"201": _json(_ref("DownloadLink"), "The link"), **_errors(*AUTH_ERRORS, 404, 409, 503)},
        },
    },
    "/api/v1/backups/{backup_id}/file/": {
        "parameters": [
            _path_id("backup_id"),
            {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
        ],
        "get": {
            "operationId": "downloadBackupByLink",
            "summary": "The file behind a link (no credentials: the signature is one)",
            "security": [],
            "responses": {"200": {"description": "The archive", "content": BINARY}, **_errors(409, 410)},
        },
    },
    "/api/v1/backups/{backup_id}/restore/": {
        "parameters": [_path_id("backup_id")],
        "get": {
            "operationId": "previewRestore",
            "summary": "What restoring this backup would change (needs backups.restore_backup)",
            "responses": {
                "200": _json(
                    _ref("RestorePreview"),
                    "Rows per table, now and in the backup; what restoring removes, brings back, changes",
                ),
                **_errors(*AUTH_ERRORS, 404, 409),
            },
        },
        "post": {
            "operationId": "restoreBackup",
            "summary": "Restore the clinic from this backup; a safety backup of the clinic is taken first",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RestoreRequest")}}},
            "responses": {
                "202": _json(_ref("Restore"), "The restore is waiting for a worker (Location: its URL)"),
                **_errors(400, *AUTH_ERRORS, 404, 409, 503),
            },
        },
    },
    "/api/v1/backups/upload/": {
        "post": {
            "operationId": "uploadBackup",
            "summary": "Upload a backup file of this clinic (an archive or a JSON export) to restore it",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "contentEncoding": "binary"}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    _ref("BackupDetail"),
                    "The file is byte for byte (SHA-256) a stored backup of the clinic: that backup, not stored "
                    "a second time (Location: its URL); restore it next",
                ),
                "201": _json(
                    _ref("BackupDetail"), "The file was accepted as a new backup (Location: its URL): restore it next"
                ),
                **_errors(400, *AUTH_ERRORS, 409, 413, 503),
            },
        },
    },
    "/api/v1/restores/": {
        "get": {
            "operationId": "listRestores",
            "summary": "The clinic's restores, newest first",
            "parameters": [*PAGING, _query("status", {"enum": JobStatus.values}, "job status")],
            "responses": {"200": _json(_ref("RestorePage"), "A page of restores"), **_errors(400, *AUTH_ERRORS)},
        },
    },
    "/api/v1/restores/{restore_id}/": {
        "parameters": [_path_id("restore_id")],
        "get": {
            "operationId": "getRestore",
            "summary": "One restore: its phase while it runs, its outcome once it ended",
            "responses": {"200": _json(_ref("Restore"), "The restore"), **_errors(*AUTH_ERRORS, 404)},
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document (server-relative paths: the clinic's host is the server)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Respaldo clinic backups API",
            "version": VERSION,
            "description": (
                "A clinic's backups on its own host. Authenticate with an API token made in the console "
                "(Authorization: Bearer rsp_…) or the console's session (unsafe methods need X-CSRFToken). "
                "Every error is JSON with a stable code and a message in the request's language (Accept-Language)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"token": []}, {"session": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "rsp_<prefix>_<secret>"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
    }


def schema_document(request: HttpRequest) -> JsonResponse:
    """The OpenAPI document as JSON (public: it holds no clinic's data)."""
    return JsonResponse(document(), json_dumps_params={"indent": 1})


schema_view = endpoint(GET=Method(schema_document, credentials=False))
