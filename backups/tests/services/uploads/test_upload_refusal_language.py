"""Upload refusals are rendered in the reader's language when shown, whenever they were raised."""

from __future__ import annotations

import io
import json

import pytest
from django.db import models
from django.utils import translation

from backups import exceptions
from backups.messages.upload import UPLOAD_MESSAGES
from backups.tests.helpers import (
    dumpdata,
)
from backups.tests.services.uploads.helpers import (
    Endless,
    clinic_manifest,
    forged_with_our_public_key,
    make_archive,
    one_per_line,
    record_of,
    refused,
)

pytestmark = pytest.mark.django_db


# --- refusals are rendered in the reader's language, when shown ------------------------


def test_a_refusal_raised_in_english_reads_in_spanish_when_shown_later(upload_tmp, settings):
    """A refusal keeps a code, a message id and JSON parameters, never a sentence: the sentence,
    inner reasons included, is made in the language of whoever reads it, now or from a stored record."""
    settings.BACKUPS_MAX_UPLOAD_BYTES = 64 << 10
    ours = clinic_manifest()["clinic"]["id"]
    manifest = clinic_manifest(payload_format="json")
    manifest["clinic"]["id"] = None
    records = json.loads(dumpdata("dental"))
    index, appointment = record_of(records, "dental.appointment")
    appointment["fields"]["status"] = "hacked"
    where = f"(línea {index + 2}, dental.appointment id {appointment['pk']})"
    with translation.override("en"):
        errors = {
            "too_large": refused(Endless(prefix=b"["), upload_tmp),
            "sql": refused(b"SELECT 1;\n", upload_tmp),
            "other_clinic": refused(make_archive(io.BytesIO(b"[\n]\n"), manifest=manifest), upload_tmp),
            "altered": refused(forged_with_our_public_key(), upload_tmp),
            "invalid_value": refused(one_per_line(records), upload_tmp),
        }
    spanish = {
        "too_large": "El archivo supera el límite de 64.0 KB.",
        "sql": (
            "Este archivo es un script SQL. Por seguridad, Respaldo nunca ejecuta SQL subido por una clínica; suba "
            "en su lugar un respaldo descargado de Respaldo o una exportación JSON de los registros de "
            "la clínica."
        ),
        "other_clinic": (
            "Este respaldo se hizo para la clínica clinica cuando su identificador interno era null; la clínica "
            f"llamada clinica aquí tiene el identificador {ours}. La plataforma se reconstruyó o la clínica se "
            "borró y se volvió a crear, así que el respaldo puede contener los datos de otra clínica que tenía el "
            "mismo nombre: se rechaza. Si de verdad son los datos de esta clínica, pídaselo al operador de la "
            "plataforma: tiene la clave para abrirla y puede extraer sus registros (docs/archive-format.md, "
            "«Opening an archive by hand») para que usted los suba aquí como una exportación JSON."
        ),
        "altered": "El archivo ha sido alterado desde que se creó.",
        "invalid_value": (
            f"El registro {index + 1} del archivo {where}, campo «status»: «hacked» no es uno de los valores "
            "permitidos (scheduled, confirmed, completed, cancelled, no_show)."
        ),
    }
    for code, error in errors.items():
        assert error.code == code
        stored = json.loads(json.dumps(error.record))  # what a job row keeps
        assert stored["code"] == code and stored["message_id"] == error.message_id
        with translation.override("es"):
            assert str(error) == spanish[code]
            assert exceptions.render(stored["message_id"], stored["params"]) == spanish[code]
        with translation.override("en"):
            assert not any(word in str(error) for word in ("El ", "Esta ", "Este ", "registro")), str(error)
    assert errors["invalid_value"].params["reason"] == {
        "message_id": "upload.sentence",
        "params": {
            "text": {
                "message_id": "upload.invalid_value.choices",
                "params": {"value": "hacked", "choices": "scheduled, confirmed, completed, cancelled, no_show"},
            }
        },
    }


def test_djangos_own_reason_for_a_bad_value_is_rendered_in_the_readers_language(upload_tmp):
    records = json.loads(dumpdata("dental"))
    index, patient = record_of(records, "dental.patient")
    patient["fields"]["birth_date"] = "1990-13-45"
    with translation.override("es"):  # raised while another language is active: nothing of it is kept
        error = refused(one_per_line(records), upload_tmp)
    reason = error.params["reason"]
    assert reason == {"message_id": "upload.django.date_invalid", "params": {"value": "1990-13-45"}}
    with translation.override("en"):
        assert str(error) == (
            f"Record {index + 1} of the file (line {index + 2}, dental.patient id {patient['pk']}), field "
            "“birth_date”: “1990-13-45” value has the correct format (YYYY-MM-DD) but it is an invalid date."
        )
    with translation.override("es"):  # Django's own Spanish, inside ours
        assert str(error) == (
            f"El registro {index + 1} del archivo (línea {index + 2}, dental.patient id {patient['pk']}), campo "
            f"«birth_date»: {translation.gettext(UPLOAD_MESSAGES['upload.django.date_invalid']) % reason['params']}"
        )
        assert "1990-13-45" in str(error) and "fecha inválida" in str(error)


@pytest.mark.parametrize(
    "field_class",
    [
        models.IntegerField,
        models.FloatField,
        models.DecimalField,
        models.BooleanField,
        models.UUIDField,
        models.DateField,
        models.DateTimeField,
        models.TimeField,
        models.DurationField,
        models.GenericIPAddressField,
        models.JSONField,
    ],
)
def test_djangos_messages_for_bad_values_are_all_known_so_they_can_be_rendered_later(field_class):
    """A message Django has and we do not list would be kept in English only."""
    known = set(UPLOAD_MESSAGES.values())
    with translation.override(None):
        invalid = {
            str(text)
            for key, text in field_class().error_messages.items()
            if key.startswith("invalid") and key != "invalid_choice"  # what to_python() and validators raise
        }
    assert invalid and invalid <= known, invalid - known
