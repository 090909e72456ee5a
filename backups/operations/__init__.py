"""Running by itself: policies, the schedule, retention, verification and drills, notifications,
the audit trail and health. Plain functions called by thin django-q2 tasks and commands."""
