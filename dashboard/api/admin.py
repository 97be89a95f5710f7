from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from dashboard import audit

from . import tokens
from .models import ApiToken


def _actor(request: HttpRequest) -> AbstractBaseUser | None:
    user = request.user
    return user if isinstance(user, AbstractBaseUser) else None


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

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
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
