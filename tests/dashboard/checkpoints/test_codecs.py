"""A codec registered once in resilience is usable by the Django store, settings and admin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse

from dashboard.checkpoints import store
from dashboard.checkpoints.models import Checkpoint
from resilience.checkpoint import (
    CODECS,
    Codec,
    checkpoint_manager,
    register_codec,
    set_default_checkpoint_manager,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:checkpoints_checkpoint_changelist"


def _reverse(data: bytes) -> bytes:
    return data[::-1]


def _reverse_bounded(data: bytes, raw_size: int) -> bytes:
    return data[::-1][: raw_size + 1]


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


@pytest.fixture
def reverse_codec() -> Iterator[Codec]:
    codec = register_codec(Codec(name="reversed", compress=_reverse, decompress=_reverse_bounded))
    yield codec
    CODECS.unregister("reversed")


def test_a_registered_codec_round_trips_through_the_django_store(
    reverse_codec: Codec, admin_client: Client
) -> None:
    state = {"step": 2, "notes": ["a", "b"] * 20}
    # (A context, not the settings fixture: it is undone before the codec is unregistered.)
    with override_settings(CHECKPOINT_COMPRESSION="reversed"):
        checkpoint_id = checkpoint_manager.save_checkpoint(state, "agent", "wf")
        assert Checkpoint.objects.get(pk=checkpoint_id).codec == "reversed"
        assert checkpoint_manager.load_checkpoint(checkpoint_id) == state
        other = checkpoint_manager.save_checkpoint({"n": 1}, "agent", "wf2")
    zstd = checkpoint_manager.save_checkpoint({"n": 2}, "agent", "wf3")
    # Read back under the default codec: the blob names its own.
    assert checkpoint_manager.load_checkpoint(checkpoint_id) == state
    assert store.get_manager().verify_checkpoint(checkpoint_id)

    # The admin's codec filter offers it, and filters by it.
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "?codec__exact=reversed" in body
    body = admin_client.get(reverse(CHANGELIST), {"codec__exact": "reversed"}).content.decode()
    assert checkpoint_id in body and other in body and zstd not in body


def test_an_unknown_codec_setting_is_improperly_configured_listing_the_codecs(
    settings: Any,
) -> None:
    with pytest.raises(ImproperlyConfigured, match="CHECKPOINT_.*'lz4'") as caught:
        settings.CHECKPOINT_COMPRESSION = "lz4"
    assert all(repr(name) in str(caught.value) for name in CODECS.names())


def test_the_admin_filter_lists_exactly_the_registered_codecs(admin_client: Client) -> None:
    checkpoint_manager.save_checkpoint({"n": 1}, "agent", "wf")
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    for name in CODECS.names():
        assert f"?codec__exact={name}" in body
