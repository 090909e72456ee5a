"""``/api/v1/`` on a clinic's host. Every route answers with and without its trailing slash
(a POST cannot be redirected to add one); the URLs the API hands out end in a slash."""

from django.urls import path, re_path

from backups.api import openapi, views

app_name = "api"

ROUTES = [
    ("backups", views.backups, "backups"),
    ("backups/upload", views.upload, "backup_upload"),
    ("backups/<int:backup_id>", views.backup, "backup"),
    ("backups/<int:backup_id>/download", views.download, "backup_download"),
    ("backups/<int:backup_id>/link", views.link, "backup_link"),
    ("backups/<int:backup_id>/file", views.backup_file, "backup_file"),
    ("backups/<int:backup_id>/restore", views.restore, "backup_restore"),
    ("restores", views.restores, "restores"),
    ("restores/<int:restore_id>", views.restore_status, "restore"),
    ("schema", openapi.schema_view, "schema"),
]

urlpatterns = [
    *(path(f"{route}/", view, name=name) for route, view, name in ROUTES),
    *(path(route, view) for route, view, _name in ROUTES),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
