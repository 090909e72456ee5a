"""django-import-export resources: how each record maps to CSV/XLSX columns."""

from import_export import fields, resources, widgets

from .models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment, Treatment


class DentistResource(resources.ModelResource):
    class Meta:
        model = Dentist
        import_id_fields = ["license_number"]
        fields = [
            "first_name",
            "last_name",
            "license_number",
            "specialty",
            "email",
            "phone",
            "works_from",
            "works_until",
            "active",
        ]


class PatientResource(resources.ModelResource):
    class Meta:
        model = Patient
        import_id_fields = ["national_id"]
        fields = ["first_name", "last_name", "national_id", "birth_date", "phone", "email", "allergies", "notes"]


class InventoryItemResource(resources.ModelResource):
    class Meta:
        model = InventoryItem
        import_id_fields = ["sku"]
        fields = ["sku", "name", "unit", "quantity", "unit_cost", "reorder_level"]


class AppointmentResource(resources.ModelResource):
    patient = fields.Field("patient", "patient", widgets.ForeignKeyWidget(Patient, "national_id"))
    dentist = fields.Field("dentist", "dentist", widgets.ForeignKeyWidget(Dentist, "license_number"))

    class Meta:
        model = Appointment
        fields = ["id", "patient", "dentist", "starts_at", "duration", "status", "reason"]


class TreatmentResource(resources.ModelResource):
    patient = fields.Field("patient", "patient", widgets.ForeignKeyWidget(Patient, "national_id"))
    dentist = fields.Field("dentist", "dentist", widgets.ForeignKeyWidget(Dentist, "license_number"))
    materials = fields.Field("materials", "materials", widgets.ManyToManyWidget(InventoryItem, ",", "sku"))

    class Meta:
        model = Treatment
        fields = ["id", "patient", "dentist", "tooth_number", "procedure", "cost", "performed_on", "materials", "notes"]


class InvoiceResource(resources.ModelResource):
    patient = fields.Field("patient", "patient", widgets.ForeignKeyWidget(Patient, "national_id"))

    class Meta:
        model = Invoice
        import_id_fields = ["number"]
        fields = ["number", "reference", "patient", "issued_on", "due_on", "total", "status"]


class PaymentResource(resources.ModelResource):
    invoice = fields.Field("invoice", "invoice", widgets.ForeignKeyWidget(Invoice, "number"))

    class Meta:
        model = Payment
        import_id_fields = ["reference"]
        fields = ["reference", "invoice", "amount", "method", "paid_at"]
