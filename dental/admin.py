"""A clinic's admin pages for its records, with CSV/XLSX import and export."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from import_export.admin import ImportExportModelAdmin

from clinic_site.admin_sites import clinic_site

from . import resources
from .models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment, Treatment


@admin.register(Dentist, site=clinic_site)
class DentistAdmin(ImportExportModelAdmin):
    resource_classes = [resources.DentistResource]
    list_display = ["last_name", "first_name", "license_number", "specialty", "active"]
    list_filter = ["active", "specialty"]
    search_fields = ["first_name", "last_name", "license_number"]


@admin.register(Patient, site=clinic_site)
class PatientAdmin(ImportExportModelAdmin):
    resource_classes = [resources.PatientResource]
    list_display = ["last_name", "first_name", "national_id", "birth_date", "phone", "email"]
    search_fields = ["first_name", "last_name", "national_id", "email"]
    readonly_fields = ["created_at"]
    exclude = ["consent_signature"]


@admin.register(InventoryItem, site=clinic_site)
class InventoryItemAdmin(ImportExportModelAdmin):
    resource_classes = [resources.InventoryItemResource]
    list_display = ["name", "sku", "quantity", "unit", "unit_cost", "reorder_level"]
    search_fields = ["name", "sku"]


class TreatmentInline(admin.TabularInline):
    model = Treatment
    extra = 0
    fields = ["tooth_number", "procedure", "cost", "performed_on", "dentist"]
    autocomplete_fields = ["dentist"]


@admin.register(Appointment, site=clinic_site)
class AppointmentAdmin(ImportExportModelAdmin):
    resource_classes = [resources.AppointmentResource]
    list_display = ["starts_at", "patient", "dentist", "duration", "status"]
    list_filter = ["status", "dentist"]
    date_hierarchy = "starts_at"
    search_fields = ["patient__last_name", "patient__national_id", "reason"]
    autocomplete_fields = ["patient", "dentist"]


@admin.register(Treatment, site=clinic_site)
class TreatmentAdmin(ImportExportModelAdmin):
    resource_classes = [resources.TreatmentResource]
    list_display = ["performed_on", "patient", "tooth_number", "procedure", "cost", "dentist"]
    list_filter = ["dentist"]
    search_fields = ["procedure", "patient__last_name", "patient__national_id"]
    autocomplete_fields = ["patient", "dentist", "appointment"]
    filter_horizontal = ["materials"]


class PaymentInline(admin.TabularInline):
    model = Payment
    extra = 0
    readonly_fields = ["reference"]


@admin.register(Invoice, site=clinic_site)
class InvoiceAdmin(ImportExportModelAdmin):
    resource_classes = [resources.InvoiceResource]
    list_display = ["number", "patient", "issued_on", "total", "status"]
    list_filter = ["status"]
    search_fields = ["number", "patient__last_name", "patient__national_id"]
    readonly_fields = ["reference"]
    autocomplete_fields = ["patient"]
    filter_horizontal = ["treatments"]
    inlines = [PaymentInline]


@admin.register(Payment, site=clinic_site)
class PaymentAdmin(ImportExportModelAdmin):
    resource_classes = [resources.PaymentResource]
    list_display = ["paid_at", "invoice", "amount", "method"]
    list_filter = ["method"]
    readonly_fields = ["reference"]
    autocomplete_fields = ["invoice"]


clinic_site.register(User, UserAdmin)
clinic_site.register(Group, GroupAdmin)
