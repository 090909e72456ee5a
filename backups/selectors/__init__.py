"""Reads of the catalog shared by the console, the API, the commands and the emails.

``catalog``: one clinic's backups, or every clinic's for the platform; ``audit``: a clinic's
audit trail; ``upload_origin``: what an uploaded backup's manifest says of the backup it copies.
"""

from backups.selectors.catalog import backup_list, platform_backup_list

__all__ = ["backup_list", "platform_backup_list"]
