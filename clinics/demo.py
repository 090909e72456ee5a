"""Demo data: the platform tenant, two clinics with realistic records, and demo logins.

Everything here is idempotent: running it again tops records up to the asked numbers and
resets the demo passwords, and never duplicates anything.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from clinics.models import Clinic, Domain
from clinics.roles import CLINIC_ADMINS_GROUP

RECEPTION_GROUP = "Reception"
DEMO_CLINICS = [
    ("clinica", "Clínica Dental Sonrisa"),
    ("bienestar", "Bienestar Odontología"),
]
FIRST_NAMES = [
    "José",
    "María",
    "Ángela",
    "Iñaki",
    "Lucía",
    "Martín",
    "Zoë",
    "Begoña",
    "Raúl",
    "Inés",
    "Sebastián",
    "Mónica",
    "Andrés",
    "Elena",
    "Tomás",
    "Nuria",
    "Óscar",
    "Pilar",
]
LAST_NAMES = [
    "García",
    "Núñez",
    "Pérez",
    "Martínez",
    "Gómez",
    "Ibáñez",
    "Fernández",
    "Muñoz",
    "Álvarez",
    "Sánchez",
    "Domínguez",
    "Rodríguez",
    "Peña",
    "Castaño",
    "López",
    "Díaz",
]
ALLERGIES = ["penicilina", "látex", "lidocaína", "ibuprofeno", "clorhexidina", "níquel"]
PROCEDURES = [
    ("Limpieza dental", "45.00"),
    ("Empaste de composite", "80.50"),
    ("Endodoncia", "320.00"),
    ("Extracción", "95.25"),
    ("Corona de porcelana", "650.00"),
    ("Blanqueamiento", "210.00"),
    ("Radiografía periapical", "25.10"),
]
MATERIALS = [
    ("Composite A2", "MAT-CMP-A2", "g", "3.75"),
    ("Anestesia lidocaína 2%", "MAT-ANE-LID", "ml", "1.20"),
    ("Guantes de nitrilo", "MAT-GLV-NIT", "par", "0.18"),
    ("Hilo de sutura 4/0", "MAT-SUT-40", "unit", "2.40"),
    ("Fresa de diamante", "MAT-FRS-DIA", "unit", "6.90"),
    ("Cemento de ionómero", "MAT-CEM-ION", "g", "4.05"),
    ("Gutapercha", "MAT-GUT-STD", "unit", "0.65"),
    ("Flúor barniz", "MAT-FLU-BAR", "ml", "1.95"),
]


@dataclass(frozen=True)
class DemoLogin:
    """A login the demo creates, printed at the end of seeding."""

    url: str
    username: str
    password: str
    role: str


def demo_clinic_specs(count: int) -> list[tuple[str, str]]:
    """The (schema, name) of the first ``count`` demo clinics."""
    specs = list(DEMO_CLINICS[:count])
    specs += [(f"clinica{n}", f"Clínica Demo {n}") for n in range(len(DEMO_CLINICS) + 1, count + 1)]
    return specs


def ensure_public_tenant(domain: str = "localhost") -> Clinic:
    """Create the platform tenant (public schema) and its domain if they are missing."""
    public, _ = Clinic.objects.get_or_create(
        schema_name=get_public_schema_name(), defaults={"name": "Respaldo platform"}
    )
    Domain.objects.get_or_create(domain=domain, defaults={"tenant": public, "is_primary": True})
    return public


def ensure_clinic(schema: str, name: str, *, domain_suffix: str = "localhost") -> Clinic:
    """Create a clinic (its schema is migrated on creation) and its domain if missing."""
    clinic = Clinic.objects.filter(schema_name=schema).first()
    if clinic is None:
        clinic = Clinic(
            schema_name=schema,
            name=name,
            contact_email=f"admin@{schema}.example",
            time_zone="Europe/Madrid",
            language="es",
        )
        clinic.save(verbosity=0)  # creates and migrates the schema
    Domain.objects.get_or_create(domain=f"{schema}.{domain_suffix}", defaults={"tenant": clinic, "is_primary": True})
    return clinic


def _set_user(username: str, *, password: str, superuser: bool = False, groups: list[Group] = ()) -> User:
    user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
    user.is_staff = True
    user.is_superuser = superuser
    user.is_active = True
    user.set_password(password)
    user.save()
    if groups:
        user.groups.set(groups)
    return user


def ensure_clinic_groups() -> tuple[Group, Group]:
    """Create or refresh the clinic's two roles in the current schema.

    "Clinic administrators" hold every permission on the clinic's records, its users and
    its backups; "Reception" may work with patients and appointments only.
    """
    admins, _ = Group.objects.get_or_create(name=CLINIC_ADMINS_GROUP)
    admins.permissions.set(
        Permission.objects.filter(
            Q(content_type__app_label__in=["dental", "backups"])
            | Q(content_type__app_label="auth", content_type__model__in=["user", "group"])
        )
    )
    reception, _ = Group.objects.get_or_create(name=RECEPTION_GROUP)
    reception.permissions.set(
        Permission.objects.filter(
            content_type__app_label="dental",
            content_type__model__in=["patient", "appointment", "dentist"],
        ).exclude(codename__startswith="delete_")
    )
    return admins, reception


def ensure_records(*, patients: int, seed: str) -> int:
    """Top the current schema's records up to ``patients`` patients; return how many were added."""
    from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment, Treatment

    rng = random.Random(seed)
    if not Dentist.objects.exists():
        Dentist.objects.bulk_create(
            Dentist(
                first_name=rng.choice(FIRST_NAMES),
                last_name=rng.choice(LAST_NAMES),
                license_number=f"COL-{seed[:3].upper()}-{n:04d}",
                specialty=spec,
                email=f"dentista{n}@{seed}.example",
                phone=f"+34 600 000 {n:03d}",
                works_from=time(8, 30, 0, 123457 * n),
                works_until=time(17, 0, 0, 125),
                active=n != 3,
            )
            for n, spec in enumerate(["Ortodoncia", "Endodoncia", "Periodoncia", "Odontopediatría"], start=1)
        )
    if not InventoryItem.objects.exists():
        InventoryItem.objects.bulk_create(
            InventoryItem(
                name=name,
                sku=sku,
                unit=unit,
                unit_cost=Decimal(cost),
                quantity=Decimal(rng.randint(0, 500000)) / 1000,
                reorder_level=rng.randint(5, 50),
            )
            for name, sku, unit, cost in MATERIALS
        )
    existing = Patient.objects.count()
    missing = max(0, patients - existing)
    if not missing:
        return 0
    dentists = list(Dentist.objects.all())
    materials = list(InventoryItem.objects.all())
    now = timezone.now()
    invoice_base = Invoice.objects.count()
    batch = 2000
    for start in range(existing, existing + missing, batch):
        stop = min(existing + missing, start + batch)
        with transaction.atomic():
            new_patients = Patient.objects.bulk_create(
                Patient(
                    first_name=rng.choice(FIRST_NAMES),
                    last_name=f"{rng.choice(LAST_NAMES)} {rng.choice(LAST_NAMES)}",
                    national_id=f"{seed[:2].upper()}{n:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}",
                    birth_date=date(1940, 1, 1) + timedelta(days=rng.randint(0, 30000)),
                    phone=f"+34 6{rng.randint(10000000, 99999999)}",
                    email=f"paciente{n}@correo.example",
                    allergies=rng.sample(ALLERGIES, rng.randint(0, 2)),
                    notes=rng.choice(
                        [
                            "",
                            "Prefiere citas por la mañana.",
                            "Paciente nervioso; explicar cada paso.",
                            "Seguro dental: Sanitas — nº póliza «A-77».",
                        ]
                    ),
                    consent_signature=bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 16, 64]))) or None,
                )
                for n in range(start, stop)
            )
            # Every fourth patient is new (no invoice yet): invoices protect their patient, and the
            # README's walkthrough deletes a patient under Patients to have something to restore.
            new_ids = {
                patient.national_id for n, patient in zip(range(start, stop), new_patients, strict=True) if n % 4 == 3
            }
            appointments, treatments, invoices = [], [], []
            for patient in new_patients:
                for _ in range(2):
                    starts = now - timedelta(
                        days=rng.randint(-30, 720), minutes=rng.randint(0, 600), microseconds=rng.randint(1, 999999)
                    )
                    appointments.append(
                        Appointment(
                            patient=patient,
                            dentist=rng.choice(dentists),
                            starts_at=starts,
                            duration=timedelta(minutes=rng.choice([20, 30, 45, 60, 90])),
                            status=rng.choice(Appointment.Status.values),
                            reason=rng.choice(PROCEDURES)[0],
                        )
                    )
            Appointment.objects.bulk_create(appointments)
            for appointment in appointments[::2]:
                procedure, cost = rng.choice(PROCEDURES)
                treatments.append(
                    Treatment(
                        patient=appointment.patient,
                        dentist=appointment.dentist,
                        appointment=appointment,
                        tooth_number=rng.choice([11, 12, 16, 21, 26, 36, 37, 46, 47, 55, 85]),
                        procedure=procedure,
                        cost=Decimal(cost),
                        performed_on=appointment.starts_at.date(),
                        notes=rng.choice(["", "Sin complicaciones.", "Revisar en 6 meses."]),
                    )
                )
            Treatment.objects.bulk_create(treatments)
            Treatment.materials.through.objects.bulk_create(
                Treatment.materials.through(treatment=t, inventoryitem=m)
                for t in treatments
                for m in rng.sample(materials, rng.randint(0, 3))
            )
            invoiced = [t for t in treatments if t.patient.national_id not in new_ids]
            for treatment in invoiced:
                invoice_base += 1
                invoices.append(
                    Invoice(
                        patient=treatment.patient,
                        number=f"F-{seed[:3].upper()}-{invoice_base:07d}",
                        reference=uuid.UUID(int=rng.getrandbits(128), version=4),
                        issued_on=treatment.performed_on,
                        due_on=treatment.performed_on + timedelta(days=30),
                        total=treatment.cost,
                        status=rng.choice(Invoice.Status.values),
                    )
                )
            Invoice.objects.bulk_create(invoices)
            Invoice.treatments.through.objects.bulk_create(
                Invoice.treatments.through(invoice=i, treatment=t) for i, t in zip(invoices, invoiced, strict=True)
            )
            Payment.objects.bulk_create(
                Payment(
                    invoice=invoice,
                    amount=(invoice.total / 2).quantize(Decimal("0.01")),
                    method=rng.choice(Payment.Method.values),
                    paid_at=datetime.combine(
                        invoice.issued_on,
                        time(10, 15, 30, rng.randint(0, 999999)),
                        tzinfo=timezone.get_current_timezone(),
                    ),
                    reference=uuid.UUID(int=rng.getrandbits(128), version=4),
                )
                for invoice in invoices
                if invoice.status in ("paid", "issued")
            )
    return missing


def seed_demo(*, clinics: int = 2, patients: int = 40, host: str = "localhost", port: int = 8000) -> list[DemoLogin]:
    """Create the demo platform and clinics; return the logins to print."""
    base = f":{port}" if port not in (80, 443) else ""
    logins: list[DemoLogin] = []
    ensure_public_tenant(host)
    with schema_context(get_public_schema_name()):
        _set_user("superadmin", password="superadmin", superuser=True)
    logins.append(DemoLogin(f"http://{host}{base}/admin/", "superadmin", "superadmin", "platform administrator"))
    for schema, name in demo_clinic_specs(clinics):
        clinic = ensure_clinic(schema, name, domain_suffix=host)
        with schema_context(clinic.schema_name):
            admins, reception = ensure_clinic_groups()
            _set_user("admin", password="admin", groups=[admins])
            _set_user("recepcion", password="recepcion", groups=[reception])
            ensure_records(patients=patients, seed=schema)
        url = f"http://{schema}.{host}{base}/admin/"
        logins.append(DemoLogin(url, "admin", "admin", f"{name}: clinic administrator"))
        logins.append(DemoLogin(url, "recepcion", "recepcion", f"{name}: reception (no backup rights)"))
    return logins
