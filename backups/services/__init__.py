"""What a person or a command asks for: back up, restore, upload a file to restore, clone...

Plain functions that take ids and return catalog rows (HackSoft's services; Zulip's
``actions/``); the console, the API, the commands and the django-q2 tasks call them. One module
per sub-domain (``backup``, ``restore``, ``upload``, ``clone``...); callers import each function
from its module (``from backups.services.backup import backup_request``): nothing is re-exported
here. What the adapters call raises only ``RespaldoError`` (``exceptions.translated``).
"""
