"""The groups a clinic's own users belong to (each clinic's schema has its own)."""

# A clinic's administrators: the demo's ``admin``; the backups app grants this group every
# backups permission on migrate (``backups.permissions``).
CLINIC_ADMINS_GROUP = "Clinic administrators"
