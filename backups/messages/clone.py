"""The sentences of a new clinic made from a backup (backups/services/clone.py), by message id."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
    "clone_without_users": _(
        "The clinic was created with its records but no user accounts: portable (json) backups do not carry "
        "them. Create its administrator with: python manage.py create_tenant_superuser --schema=%(schema)s"
    ),
    "clone_schema_invalid": _(
        "'%(schema)s' cannot be a clinic's schema name: use up to %(max)s lowercase letters, digits and "
        "single underscores, starting with a letter."
    ),
    "clone_schema_taken_clinic": _("The schema name '%(schema)s' is already used by clinic %(clinic)s."),
    "clone_schema_taken_database": _("A schema '%(schema)s' already exists in the database."),
    "clone_schema_taken_clone": _("Clone #%(clone)s is already making a clinic '%(schema)s'."),
    "clone_schema_taken_files": _(
        "A media folder for '%(schema)s' already exists (files of an earlier clinic?): choose another name."
    ),
    "clone_domain_invalid": _(
        "'%(domain)s' is not a valid domain: use lowercase letters, digits and hyphens, labels separated by dots."
    ),
    "clone_domain_taken": _("The domain %(domain)s already belongs to clinic %(clinic)s."),
    "clone_domain_taken_clone": _("Clone #%(clone)s is already making a clinic at the domain %(domain)s."),
    "clone_media_storage": _(
        "This backup holds the clinic's files, and a new clinic's files can only be written to local media "
        "storage: nothing was created."
    ),
    "clone_failed": _("The new clinic %(schema)s was not created (nothing was left behind): %(reason)s"),
    "clone_media_not_in_backup": _(
        "The clinic was created. This backup was made before files were part of backups: it has no files (X-rays)."
    ),
    "clone_media_missing": _(
        "The clinic was created with its records and files, but %(count)s file(s) were already missing when "
        "the backup was made: %(files)s"
    ),
    "interrupted_clone": _(
        "Interrupted: the worker running this clone stopped (crash, kill or time-out) before the new clinic "
        "was committed. Nothing was created."
    ),
    "recovered_clone": _("The worker stopped after the new clinic was committed; recovery put its files in place."),
}
