"""A clinic's own records: the data that backups protect.

The field types are chosen on purpose to cover what makes a backup round-trip hard:
accented text, JSON, UUIDs, decimals, time-zone-aware datetimes with microseconds,
durations, times, binary data, uploaded files, foreign keys and many-to-many relations.
"""

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


class Dentist(models.Model):
    first_name = models.CharField(_("first name"), max_length=100)
    last_name = models.CharField(_("last name"), max_length=100)
    license_number = models.CharField(_("license number"), max_length=40, unique=True)
    specialty = models.CharField(_("specialty"), max_length=100, blank=True)
    email = models.EmailField(_("email"), blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    works_from = models.TimeField(_("works from"), null=True, blank=True)
    works_until = models.TimeField(_("works until"), null=True, blank=True)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("dentist")
        verbose_name_plural = _("dentists")
        ordering = ["last_name", "first_name"]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Patient(models.Model):
    first_name = models.CharField(_("first name"), max_length=100)
    last_name = models.CharField(_("last name"), max_length=100)
    national_id = models.CharField(_("national id"), max_length=30, unique=True)
    birth_date = models.DateField(_("birth date"), null=True, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    email = models.EmailField(_("email"), blank=True)
    allergies = models.JSONField(_("allergies"), default=list, blank=True)
    notes = models.TextField(_("notes"), blank=True)
    xray = models.FileField(_("X-ray"), upload_to="xrays/%Y/%m/", blank=True)
    consent_signature = models.BinaryField(_("signed consent (image bytes)"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("patient")
        verbose_name_plural = _("patients")
        ordering = ["last_name", "first_name"]
        indexes = [models.Index(fields=["last_name", "first_name"])]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}"


class InventoryItem(models.Model):
    name = models.CharField(_("name"), max_length=200)
    sku = models.CharField(_("SKU"), max_length=50, unique=True)
    unit = models.CharField(_("unit"), max_length=20, default="unit")
    quantity = models.DecimalField(_("quantity in stock"), max_digits=10, decimal_places=3, default=0)
    unit_cost = models.DecimalField(_("unit cost"), max_digits=10, decimal_places=2)
    reorder_level = models.PositiveIntegerField(_("reorder level"), default=0)

    class Meta:
        verbose_name = _("inventory item")
        verbose_name_plural = _("inventory items")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Appointment(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        CONFIRMED = "confirmed", _("Confirmed")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")
        NO_SHOW = "no_show", _("No-show")

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="appointments")
    dentist = models.ForeignKey(Dentist, on_delete=models.PROTECT, related_name="appointments")
    starts_at = models.DateTimeField(_("starts at"))
    duration = models.DurationField(_("duration"))
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    reason = models.CharField(_("reason"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("appointment")
        verbose_name_plural = _("appointments")
        ordering = ["-starts_at"]
        indexes = [models.Index(fields=["starts_at"])]

    def __str__(self) -> str:
        return f"{self.patient} · {self.starts_at:%Y-%m-%d %H:%M}"


class Treatment(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="treatments")
    dentist = models.ForeignKey(Dentist, on_delete=models.PROTECT, related_name="treatments")
    appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="treatments"
    )
    tooth_number = models.PositiveSmallIntegerField(
        _("tooth number (FDI)"), validators=[MinValueValidator(11), MaxValueValidator(85)]
    )
    procedure = models.CharField(_("procedure"), max_length=200)
    cost = models.DecimalField(_("cost"), max_digits=10, decimal_places=2)
    performed_on = models.DateField(_("performed on"))
    materials = models.ManyToManyField(InventoryItem, blank=True, related_name="treatments")
    notes = models.TextField(_("notes"), blank=True)

    class Meta:
        verbose_name = _("treatment")
        verbose_name_plural = _("treatments")
        ordering = ["-performed_on"]

    def __str__(self) -> str:
        return f"{self.procedure} ({self.tooth_number})"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ISSUED = "issued", _("Issued")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField(_("number"), max_length=30, unique=True)
    reference = models.UUIDField(_("reference"), default=uuid.uuid4, unique=True, editable=False)
    issued_on = models.DateField(_("issued on"))
    due_on = models.DateField(_("due on"), null=True, blank=True)
    total = models.DecimalField(_("total"), max_digits=12, decimal_places=2)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ISSUED)
    treatments = models.ManyToManyField(Treatment, blank=True, related_name="invoices")

    class Meta:
        verbose_name = _("invoice")
        verbose_name_plural = _("invoices")
        ordering = ["-issued_on", "-number"]

    def __str__(self) -> str:
        return self.number


class Payment(models.Model):
    class Method(models.TextChoices):
        CASH = "cash", _("Cash")
        CARD = "card", _("Card")
        TRANSFER = "transfer", _("Bank transfer")
        INSURANCE = "insurance", _("Insurance")

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="payments")
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2)
    method = models.CharField(_("method"), max_length=20, choices=Method.choices)
    paid_at = models.DateTimeField(_("paid at"))
    reference = models.UUIDField(_("reference"), default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        verbose_name = _("payment")
        verbose_name_plural = _("payments")
        ordering = ["-paid_at"]

    def __str__(self) -> str:
        return f"{self.amount} ({self.get_method_display()})"
