"""What the console (``backups.admin``) and the API (``backups.api``) share: the forms that
validate a person's request, the upload handler that bounds a request body, and HTTP helpers.

Neither adapter imports the other; both import this package.
"""
