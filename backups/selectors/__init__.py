"""Reads of the catalog shared by the console, the API, the commands and the emails.

``catalog``: one clinic's backups (or every clinic's, for the platform), its active backup, its
restores; ``platform``: every clinic's backup health in a bounded number of queries; ``audit``: a
clinic's audit trail; ``trends``: the last backups as samples for the charts; ``upload_origin``:
what an uploaded backup's manifest says of the backup it copies.
"""

from backups.selectors.catalog import backup_list, platform_backup_list

__all__ = ["backup_list", "platform_backup_list"]
