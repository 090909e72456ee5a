"""What operations announce, so that notifications (and later webhooks) can listen.

Each is sent after the job's row is final, with ``sender`` the model class:

* ``backup_finished(backup=Backup)``: a backup succeeded or failed (any kind);
* ``restore_finished(restore=Restore)``: a restore succeeded or failed;
* ``drill_finished(backup=Backup)``: a verification or restore drill of ``backup`` ended
  (``backup.drill_status`` says how).
"""

from django.dispatch import Signal

backup_finished = Signal()
restore_finished = Signal()
drill_finished = Signal()
