"""Platform admin: platform users and groups, django-q2's queues, and the clinics' domains inline.

The clinics page itself (``ClinicAdmin``, with each clinic's backup health) is the backup
product's: ``backups.admin.platform_clinics`` registers it with :class:`DomainInline`.
"""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from clinic_site.admin_sites import platform_site

from .models import Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 1


platform_site.register(User, UserAdmin)
platform_site.register(Group, GroupAdmin)
platform_site.register(Schedule, q_admin.ScheduleAdmin)
platform_site.register(Success, q_admin.TaskAdmin)
platform_site.register(Failure, q_admin.FailAdmin)
platform_site.register(OrmQ, q_admin.QueueAdmin)
