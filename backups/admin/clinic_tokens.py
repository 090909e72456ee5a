"""The clinic console's API tokens: make one (shown once), list them, revoke them.

A thin adapter over ``backups.services.api_tokens``. Every page is scoped to
``request.tenant`` (another clinic's token id is a 404 on every page) and, for who lacks
``backups.delete_apitoken`` (a manager's permission), to the user's own tokens. A token is
always made for the requesting user, since it acts as its creator. The whole token appears
once, on the page that answers the "Add" form (``Cache-Control: no-store``); afterwards the
token's page names it by its prefix only. Tokens are never edited nor deleted: revoking one
(a confirmation page, then a POST) keeps it in the list as history.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from backups.admin.readonly import ClinicScopedAdmin
from backups.models import ApiToken
from backups.services.api_tokens import TOKEN_START, clinic_tokens, token_create, token_revoke
from backups.web.forms import posted
from backups.web.http import client_address
from clinic_site.admin_sites import clinic_site

API_PATH = "/api/v1/backups/"
SCHEMA_PATH = "/api/v1/schema"


class TokenForm(forms.Form):
    """A new token of the requesting user: what it is for, and whether it may only read."""

    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=100,
        help_text=gettext_lazy("What the token is for, for example: front desk app."),
        widget=forms.TextInput(attrs={"size": 40, "autocomplete": "off"}),
    )
    read_only = forms.BooleanField(
        label=gettext_lazy("Read only"),
        required=False,
        help_text=gettext_lazy(
            "A read-only token can list and read backups, never back up, download, restore or upload."
        ),
    )


def when(moment) -> str:
    """A moment as the console writes it, in the clinic's time zone."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def is_own(request: HttpRequest, token: ApiToken) -> bool:
    """Whether ``token`` belongs to the requesting user (same id and name in this clinic)."""
    return token.user_id == request.user.pk and token.username == request.user.get_username()


def is_manager(request: HttpRequest) -> bool:
    """Who holds ``delete_apitoken`` sees and revokes every token of the clinic."""
    return request.user.has_perm("backups.delete_apitoken")


class StatusFilter(admin.SimpleListFilter):
    """Active or revoked tokens."""

    title = gettext_lazy("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("active", _("Active")), ("revoked", _("Revoked"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        if self.value() == "active":
            return queryset.filter(revoked_at=None)
        if self.value() == "revoked":
            return queryset.exclude(revoked_at=None)
        return queryset


@admin.register(ApiToken, site=clinic_site)
class ClinicApiTokenAdmin(ClinicScopedAdmin):
    """This clinic's API tokens: each user's own, or every one for a manager."""

    list_display = ["name", "prefix_display", "username", "read_only", "created", "last_used", "status"]
    list_display_links = ["name"]
    list_filter = [StatusFilter, "read_only"]
    search_fields = ["name", "username", "prefix"]
    fields = [
        "token_name",
        "prefix_display",
        "username",
        "access",
        "created",
        "created_by",
        "last_used",
        "status",
    ]
    readonly_fields = fields
    actions = ["revoke_selected"]
    change_form_template = "admin/backups/apitoken/change_form.html"
    change_list_template = "admin/backups/apitoken/change_list.html"

    # --- rows and permissions -----------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        tokens = clinic_tokens(request.tenant.pk)
        if is_manager(request):
            return tokens
        return tokens.filter(user_id=request.user.pk, username=request.user.get_username())

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a token is never edited: revoke it and make another

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoked tokens stay, as the clinic's history

    def has_revoke_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        """Own tokens always; others' with ``delete_apitoken``. Without ``obj``: whether any may be."""
        if obj is None:
            return self.has_view_permission(request)
        return is_own(request, obj) or is_manager(request)

    def own_or_404(self, request: HttpRequest, object_id: str) -> ApiToken:
        """The token ``object_id`` if this user may see it here; 404 otherwise."""
        token = self.get_queryset(request).filter(pk=object_id).first() if str(object_id).isdigit() else None
        if token is None:
            raise Http404
        return token

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[ApiToken], search_term: str):
        """A pasted token or its ``rsp_<prefix>_…`` finds it by its prefix."""
        term = search_term.strip()
        if term.startswith(TOKEN_START):
            term = term[len(TOKEN_START) :].split("_", 1)[0].rstrip("…")
        return super().get_search_results(request, queryset, term)

    # --- columns ------------------------------------------------------------------------

    @admin.display(description=gettext_lazy("name"))
    def token_name(self, token: ApiToken) -> str:
        return token.name

    @admin.display(description=gettext_lazy("access"))
    def access(self, token: ApiToken) -> str:
        if token.read_only:
            return _("read only: it can list and read backups, never back up, download, restore or upload")
        return _("everything its user may do in the API")

    @admin.display(description=gettext_lazy("token"), ordering="prefix")
    def prefix_display(self, token: ApiToken) -> str:
        return format_html("<code>{}{}_…</code>", TOKEN_START, token.prefix)

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created(self, token: ApiToken) -> str:
        return when(token.created_at)

    @admin.display(description=gettext_lazy("last used"), ordering="last_used_at")
    def last_used(self, token: ApiToken) -> str:
        if token.last_used_at is None:
            return _("never")
        if token.last_used_address:
            return _("%(when)s from %(address)s") % {
                "when": when(token.last_used_at),
                "address": token.last_used_address,
            }
        return when(token.last_used_at)

    @admin.display(description=gettext_lazy("status"), ordering="revoked_at")
    def status(self, token: ApiToken) -> str:
        if token.active:
            return format_html('<span class="respaldo-badge respaldo-succeeded">✓ {}</span>', _("active"))
        text = _("revoked %(when)s by %(who)s") % {"when": when(token.revoked_at), "who": token.revoked_by or "—"}
        return format_html('<span class="respaldo-token-revoked">✗ {}</span>', text)

    # --- pages --------------------------------------------------------------------------

    def get_urls(self):
        revoke = self.admin_site.admin_view(self.revoke_view)
        return [path("<int:token_id>/revoke/", revoke, name="backups_apitoken_revoke"), *super().get_urls()]

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:backups_apitoken_{name}", args=args)

    def page(self, request: HttpRequest, template: str, title: str, **context) -> TemplateResponse:
        """An admin page of this model with the site's context."""
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title, **context}
        return TemplateResponse(request, f"admin/backups/apitoken/{template}", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        context = {"title": capfirst(self.model._meta.verbose_name_plural), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        token = self.own_or_404(request, object_id)
        context = {"token": token, "title": capfirst(self.model._meta.verbose_name), **(extra_context or {})}
        if token.active and self.has_revoke_permission(request, token):
            context["revoke_url"] = self._url("revoke", token.pk)
        return super().change_view(request, object_id, form_url, context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        self.own_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        self.own_or_404(request, object_id)
        raise PermissionDenied

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        """The form; on a valid POST, the new token's page, which shows the token this once."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TokenForm(*posted(request)[:1])
        if request.method != "POST" or not form.is_valid():
            return self.page(request, "add.html", _("Add API token"), form=form)
        new = token_create(
            clinic=request.tenant,
            user=request.user,
            name=form.cleaned_data["name"],
            read_only=form.cleaned_data["read_only"],
            created_by=request.user.get_username(),
            address=client_address(request),
        )
        self.log_addition(request, new.token, [{"added": {}}])
        self.message_user(request, _("The API token “%(name)s” was created.") % {"name": new.token.name})
        response = self.page(
            request,
            "created.html",
            _("Your new API token"),
            token=new.token,
            secret=new.secret,
            token_url=self._url("change", new.token.pk),
            api_url=request.build_absolute_uri(API_PATH),
            schema_url=request.build_absolute_uri(SCHEMA_PATH),
        )
        response["Cache-Control"] = "no-store"
        return response

    def revoke_view(self, request: HttpRequest, token_id: int) -> HttpResponse:
        """GET: what revoking means; POST: revoke the token, then back to its page."""
        token = self.own_or_404(request, str(token_id))
        if not self.has_revoke_permission(request, token):
            raise PermissionDenied
        if request.method != "POST":
            title = _("Revoke the API token “%(name)s”?") % {"name": token.name}
            return self.page(request, "revoke_confirm.html", title, tokens=[token], token=token)
        self.revoke(request, [token])
        return HttpResponseRedirect(self._url("change", token.pk))

    @admin.action(description=gettext_lazy("Revoke selected tokens"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> HttpResponse | None:
        """Like ``delete_selected``: a confirmation page first, the revocation on the POST carrying ``post``."""
        tokens = [token for token in queryset if token.active]
        refused = [token for token in tokens if not self.has_revoke_permission(request, token)]
        if refused:
            raise PermissionDenied
        if not tokens:
            self.message_user(request, _("The selected tokens were already revoked."), messages.WARNING)
            return None
        if request.POST.get("post"):
            self.revoke(request, tokens)
            return None
        return self.page(
            request,
            "revoke_confirm.html",
            _("Revoke the selected API tokens?"),
            tokens=tokens,
            action_checkbox_name=ACTION_CHECKBOX_NAME,
        )

    def revoke(self, request: HttpRequest, tokens: list[ApiToken]) -> None:
        """Revoke ``tokens`` (one service call each) and say how many were."""
        revoked = [
            token
            for token in tokens
            if token_revoke(token=token, revoked_by=request.user.get_username(), address=client_address(request))
        ]
        for token in revoked:
            self.log_change(request, token, [{"changed": {"fields": ["revoked"]}}])
        if len(revoked) == 1:
            self.message_user(request, _("The API token “%(name)s” was revoked.") % {"name": revoked[0].name})
        elif revoked:
            count = len(revoked)
            self.message_user(
                request,
                ngettext("%(count)d API token revoked.", "%(count)d API tokens revoked.", count) % {"count": count},
            )
        if len(revoked) < len(tokens):
            self.message_user(request, _("Some of these tokens were already revoked."), messages.WARNING)
