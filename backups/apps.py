from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = _("Backups")

    def ready(self) -> None:
        from django_q.signals import pre_execute

        from backups.checks import check_archive_keys
        from backups.jobs import reset_schema

        pre_execute.connect(reset_schema, dispatch_uid="backups.reset_schema")
        from django.db.models.signals import post_migrate, post_save

        from backups.permissions import grant_backup_permissions

        post_migrate.connect(grant_backup_permissions, dispatch_uid="backups.grant_permissions")

        from backups.services.policy import create_policy_with_clinic

        post_save.connect(create_policy_with_clinic, sender="clinics.Clinic", dispatch_uid="backups.policy")
        from backups.operations.notify import connect_receivers

        connect_receivers()
        from backups.operations import webhooks

        webhooks.connect_receivers()
        checks.register(check_archive_keys, checks.Tags.security, deploy=True)
