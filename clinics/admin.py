"""Platform admin: clinics and their domains, jobs, platform users."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.utils.translation import gettext_lazy as _
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from clinic_site.admin_sites import platform_site

from .models import Clinic, Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 1


@admin.register(Clinic, site=platform_site)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ["name", "schema_name", "primary_domain", "contact_email", "created_at"]
    search_fields = ["name", "schema_name", "domains__domain"]
    inlines = [DomainInline]

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(schema_name="public").prefetch_related("domains")

    def get_readonly_fields(self, request, obj=None):
        # Renaming a schema would orphan its data: it is chosen once, at creation.
        return ["schema_name", "created_at"] if obj else ["created_at"]

    @admin.display(description=_("primary domain"))
    def primary_domain(self, obj: Clinic) -> str:
        primary = next((d for d in obj.domains.all() if d.is_primary), None)
        return primary.domain if primary else "—"


platform_site.register(User, UserAdmin)
platform_site.register(Group, GroupAdmin)
platform_site.register(Schedule, q_admin.ScheduleAdmin)
platform_site.register(Success, q_admin.TaskAdmin)
platform_site.register(Failure, q_admin.FailAdmin)
platform_site.register(OrmQ, q_admin.QueueAdmin)
