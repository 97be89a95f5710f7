from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import ForeignKey, QuerySet
from django.forms import ModelChoiceField, ModelForm
from django.http import HttpRequest

from dashboard import audit

from . import tokens
from .models import ApiToken


def _actor(request: HttpRequest) -> AbstractBaseUser | None:
    user = request.user
    return user if isinstance(user, AbstractBaseUser) else None


def _is_superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Tokens are created here (the secret is shown once) and revoked, never edited."""

    list_display = [
        "name",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked",
    ]
    list_filter = ["revoked", "created_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    actions = ["revoke_tokens"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked", "revoked_at"]

    def get_fields(  # type: ignore[override]
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> list[str]:
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["user", "name", "prefix", "created_at", "last_used_at", "expires_at"] + [
            "revoked",
            "revoked_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return []
        # The owner and expiry of an existing token do not change: revoke and create anew.
        return ["user", "expires_at", *self.readonly_fields]

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        # A token acts as its owner, and its actions are audited under the owner's name:
        # minting one for somebody else would be impersonation. Only a superuser (who can
        # already do anything) may; everyone else gets a list holding only themselves.
        # (`manage.py create_api_token` runs on the server and stays unrestricted.)
        if db_field.name == "user" and not _is_superuser(request):
            kwargs["queryset"] = get_user_model().objects.filter(pk=cast(Any, request.user.pk))
            kwargs["initial"] = request.user.pk
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        if obj.user_id != request.user.pk and not _is_superuser(request):
            raise PermissionDenied("a token can only be created for yourself")
        plaintext = tokens.fill_new_token(obj)
        super().save_model(request, obj, form, change)
        audit.record(
            user=_actor(request),
            source="admin",
            action="api_token.create",
            target=f"{obj.prefix} ({obj.name}) for {obj.user.get_username()}",
            details={"expires_at": obj.expires_at.isoformat() if obj.expires_at else None},
        )
        messages.warning(
            request,
            f"Token {obj.name!r} created. Copy it now, it will not be shown again: {plaintext}",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = 0
        for token in queryset.select_related("user").filter(revoked=False):
            tokens.revoke_token(token=token, actor=_actor(request), source="admin")
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        audit.record(
            user=_actor(request),
            source="admin",
            action="api_token.delete",
            target=f"{obj.prefix} ({obj.name}) for {obj.user.get_username()}",
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        # "Delete selected" bypasses delete_model: audit each token it removes.
        with transaction.atomic():
            for token in queryset.select_related("user"):
                self.delete_model(request, token)
