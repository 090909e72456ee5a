"""The forms of a person's requests, shared by the console and the API: back up now, confirm a
restore, upload a file to restore."""

from __future__ import annotations

import unicodedata

from django import forms
from django.contrib.admin.widgets import AdminRadioSelect
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from backups.exceptions import render
from backups.models import Backup
from backups.services.preview import RestorePreview


class RadioSelect(AdminRadioSelect):
    """The admin's radio list (styled by its forms.css), whose ``autofocus`` goes on the first button only
    (one element per page may have it)."""

    def __init__(self, attrs: dict | None = None, choices=()) -> None:
        super().__init__({"class": "radiolist", **(attrs or {})}, choices)

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None) -> dict:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        if index or subindex:
            option["attrs"].pop("autofocus", None)
        return option


def focus_first(form: forms.Form) -> forms.Form:
    """Put the focus on the form's first visible field when its page opens (``autofocus``)."""
    for field in form.visible_fields():
        field.field.widget.attrs["autofocus"] = True
        break
    return form


def posted(request: HttpRequest) -> tuple:
    """(data, files) for a bound form on POST, (None, None) otherwise (even an empty POST binds)."""
    return (request.POST, request.FILES) if request.method == "POST" else (None, None)


class BackupNowForm(forms.Form):
    """A manual backup: which format, and why (optional)."""

    payload_format = forms.ChoiceField(
        label=_("Format"),
        choices=Backup.Format.choices,
        initial=Backup.Format.PG,
        widget=RadioSelect,
        help_text=_(
            "PostgreSQL: the whole clinic (records, users, settings), fastest to restore. "
            "Portable JSON: the clinic's records only, readable by other tools."
        ),
    )
    note = forms.CharField(
        label=_("Note"),
        max_length=200,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": _("for example: before year-end closing"), "size": 60}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        focus_first(self)


def _folded(text: str) -> str:
    """``text`` without case, accents or surrounding and repeated spaces ("Clínica  X" ~ "clinica x")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


class RestoreConfirmForm(forms.Form):
    """The admin types the clinic's name: its schema name exactly, or (when ``name`` is given, as the
    console does) the name the page shows, whatever its case and accents. A backup that empties
    tables needs a tick too. The API passes no ``name``: it confirms with the schema name."""

    confirm = forms.CharField(label=_("Type the clinic's name to confirm"), max_length=100, strip=True)
    accept_emptied = forms.BooleanField(label=_("I understand that these tables will be left empty"), required=False)

    def __init__(self, *args, schema: str, preview: RestorePreview, name: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schema = schema
        self.name = name.strip()
        self.preview = preview
        self.fields["confirm"].widget.attrs.update({"autocomplete": "off", "spellcheck": "false"})
        code = format_html("<strong><code>{}</code></strong>", schema)
        if self.name and self.name != schema:
            self.fields["confirm"].help_text = format_html(
                _("Type {name} (or {schema})"), name=format_html("<strong>{}</strong>", self.name), schema=code
            )
        else:
            self.fields["confirm"].help_text = format_html(_("Type {schema}"), schema=code)
        if not preview.emptied:
            del self.fields["accept_emptied"]
        focus_first(self)

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"]
        if value == self.schema or (self.name and _folded(value) == _folded(self.name)):
            return value
        shown = self.name or self.schema
        raise forms.ValidationError(render("restore_not_confirmed", {"schema": shown}), code="restore_not_confirmed")

    def clean(self) -> dict:
        cleaned = super().clean()
        if "accept_emptied" in self.fields and not cleaned.get("accept_emptied"):
            tables = ", ".join(change.label for change in self.preview.emptied)
            self.add_error(
                "accept_emptied",
                forms.ValidationError(render("emptied_not_accepted", {"tables": tables}), code="emptied_not_accepted"),
            )
        return cleaned


class UploadForm(forms.Form):
    """A backup file (a Respaldo archive or a Django JSON export of this clinic)."""

    file = forms.FileField(label=_("Backup file"))

    def __init__(self, *args, limit: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = _(
            "A .respaldo archive of this clinic, or a JSON export of its records. At most %(limit)s."
        ) % {"limit": filesizeformat(limit)}
        focus_first(self)
