"""Checkpoints inside Django: blobs in Django storage, records in the ``Checkpoint`` model.

Settings (all optional):

``CHECKPOINT_STORAGE``
    Alias in ``STORAGES`` for the blobs (default ``"default"``: FileSystemStorage under
    MEDIA_ROOT; any storage such as django-storages' S3 works unchanged). Blobs are
    sensitive and hold their own integrity data: do not serve this storage publicly.
``CHECKPOINT_STORAGE_PREFIX``
    Folder of the blobs in that storage (default ``"checkpoints"``); a blob is
    ``<prefix>/<checkpoint_id>.ckpt``. Changing it orphans existing blobs.
``CHECKPOINT_COMPRESSION``
    The codec of new saves: the name of a codec in ``resilience.checkpoint.CODECS``
    (``"zstd"``, the default, ``"gzip"``, ``"none"``, or one added with
    ``register_codec()`` before the manager is built, e.g. in an ``AppConfig.ready``),
    or True/False. Any other value is an ``ImproperlyConfigured`` listing the codecs.
``CHECKPOINT_SIGNING_KEY``
    Key for the blobs' HMAC. Default: derived from ``SECRET_KEY`` as
    ``salted_hmac(SIGNING_KEY_SALT, "signing-key", secret=SECRET_KEY, algorithm="sha256")``,
    i.e. HMAC-SHA256 keyed by SHA-256(salt + SECRET_KEY): one-way and specific to
    checkpoints. Rotating ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` is not consulted)
    makes existing checkpoints fail verification, so set this explicitly to rotate the
    two independently.

The manager is built without touching the database or the storage; ``install()``
(run by ``CheckpointsConfig.ready``) makes it the process default, so
``resilience.checkpoint.checkpoint_manager`` saves into the model and storage.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Max
from django.db.models.signals import post_delete
from django.utils.crypto import salted_hmac

from resilience.checkpoint import (
    CheckpointRecord,
    CompositeCheckpointStore,
    StateCheckpointManager,
    set_default_checkpoint_manager,
)
from resilience.checkpoint.compression import DEFAULT_CODEC
from resilience.errors import ResilienceError

from . import latest
from .blob_storage import DjangoStorageBlobStore
from .models import Checkpoint

SIGNING_KEY_SALT = "dashboard.checkpoints.signing-key"
_CHUNK = 500
_SEQ_ATTEMPTS = 20
_SETTINGS = frozenset(
    {
        "SECRET_KEY",
        "CHECKPOINT_STORAGE",
        "CHECKPOINT_STORAGE_PREFIX",
        "CHECKPOINT_COMPRESSION",
        "CHECKPOINT_SIGNING_KEY",
    }
)

# Set while a caller that removes the blobs itself deletes rows, so the post_delete
# safety net does not schedule a second delete.
_blobs_handled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "checkpoint_blobs_handled", default=False
)


@contextlib.contextmanager
def _no_transaction(using: str) -> Iterator[None]:
    yield


@functools.cache
def _upsert_fields() -> tuple[Any, ...]:
    """The ``Checkpoint`` columns an index upsert writes, ``seq`` excepted."""
    return tuple(f for f in Checkpoint._meta.concrete_fields if f.name != "seq")


# The columns whose values the backend adapts (a datetime, JSON); the others are the
# record's own str, int and float values, which every backend takes as they are.
_ADAPTED = (models.DateTimeField, models.JSONField)


_UPSERT_SQL: dict[str, str] = {}


def _upsert_sql(connection: Any) -> str:
    """``INSERT ... SELECT <values>, max(seq) + 1 ... ON CONFLICT (checkpoint_id) DO
    UPDATE`` for ``connection`` (SQLite >= 3.24 and PostgreSQL spell it alike)."""
    cached = _UPSERT_SQL.get(connection.vendor)
    if cached is not None:
        return cached
    quote = connection.ops.quote_name
    table = quote(Checkpoint._meta.db_table)
    fields = _upsert_fields()
    columns = [quote(f.column) for f in fields]
    seq = quote(Checkpoint._meta.get_field("seq").column)
    key = quote(Checkpoint._meta.get_field("checkpoint_id").column)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    # "WHERE true": SQLite needs it to read ON CONFLICT after INSERT ... SELECT.
    sql = _UPSERT_SQL[connection.vendor] = (
        f"INSERT INTO {table} ({', '.join(columns)}, {seq}) "
        f"SELECT {', '.join(['%s'] * len(columns))}, COALESCE(MAX({seq}), 0) + 1 "
        f"FROM {table} WHERE true "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    return sql


class ModelMetadataIndex:
    """Checkpoint records as ``Checkpoint`` rows (one upsert per save).

    Args:
        blobs: names the ``storage_path`` column.
    """

    def __init__(self, blobs: DjangoStorageBlobStore) -> None:
        self.blobs = blobs
        self.hints = latest.LatestHints()

    def __repr__(self) -> str:
        return "ModelMetadataIndex()"

    def add_record(self, record: CheckpointRecord) -> None:
        fields = Checkpoint.fields_from_record(
            record, storage_path=self.blobs.name(record.checkpoint_id)
        )
        # ``seq`` orders records (ids follow wall clocks); a replaced row keeps its own.
        # Two concurrent saves may pick the same next value: its unique index refuses
        # the second, which tries again. One statement (the next seq computed in it):
        # the ORM's aggregate, then an upsert in a transaction, cost about 1 ms of CPU
        # per save, more than the compressed, hashed, fsynced blob write.
        connection = connections[router.db_for_write(Checkpoint)]
        params = [
            record.checkpoint_id
            if field.primary_key
            else field.get_db_prep_save(fields[field.name], connection)
            if isinstance(field, _ADAPTED)
            else fields[field.name]
            for field in _upsert_fields()
        ]
        for attempt in range(_SEQ_ATTEMPTS):
            try:
                # A savepoint only inside a caller's transaction (a failed statement
                # would spoil it); alone, the statement is its own transaction.
                atomic = transaction.atomic if connection.in_atomic_block else _no_transaction
                with atomic(using=connection.alias), connection.cursor() as cursor:
                    cursor.execute(_upsert_sql(connection), params)
                return
            except IntegrityError:
                if attempt == _SEQ_ATTEMPTS - 1:
                    raise

    def add_new_record(self, record: CheckpointRecord) -> bool:
        """Insert ``record`` unless a row has its id (that row is left as it is);
        whether it was inserted."""
        fields = Checkpoint.fields_from_record(
            record, storage_path=self.blobs.name(record.checkpoint_id)
        )
        for attempt in range(_SEQ_ATTEMPTS):
            top = Checkpoint.objects.aggregate(top=Max("seq"))["top"] or 0
            try:
                with transaction.atomic():
                    Checkpoint.objects.create(
                        checkpoint_id=record.checkpoint_id, seq=top + 1, **fields
                    )
                return True
            except IntegrityError:
                if Checkpoint.objects.filter(pk=record.checkpoint_id).exists():
                    return False
                if attempt == _SEQ_ATTEMPTS - 1:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    def get_record(self, checkpoint_id: str) -> CheckpointRecord | None:
        row = Checkpoint.objects.filter(pk=checkpoint_id).first()
        return None if row is None else row.to_record()

    def query_records(
        self,
        *,
        agent_id: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        # Raw SQL, and a workflow's latest from a hint: see dashboard.checkpoints.latest.
        connection = connections[router.db_for_read(Checkpoint)]
        if agent_id is not None and workflow_id is not None and limit == 1:
            rows = self.hints.latest(connection, agent_id, workflow_id)
        else:
            rows = latest.query(connection, agent_id=agent_id, workflow_id=workflow_id, limit=limit)
        return latest.records(rows)

    def remove_records(self, checkpoint_ids: Sequence[str]) -> None:
        # The manager deletes the blobs itself right after this.
        ids = list(checkpoint_ids)
        with blobs_handled(), transaction.atomic():
            for start in range(0, len(ids), _CHUNK):
                Checkpoint.objects.filter(pk__in=ids[start : start + _CHUNK]).delete()


class DjangoCheckpointStore(CompositeCheckpointStore):
    """The ``CheckpointStore`` of the Django project: storage blobs + model records.

    Args:
        alias: ``STORAGES`` alias of the blob storage.
        prefix: folder of the blobs in that storage.
    """

    __slots__ = ()

    blobs: DjangoStorageBlobStore

    def __init__(self, *, alias: str = "default", prefix: str = "checkpoints") -> None:
        blobs = DjangoStorageBlobStore(alias=alias, prefix=prefix)
        super().__init__(blobs, ModelMetadataIndex(blobs))

    def add_new_record(self, record: CheckpointRecord) -> bool:
        """:meth:`ModelMetadataIndex.add_new_record`: never replaces a row."""
        return cast(ModelMetadataIndex, self.index).add_new_record(record)

    def __repr__(self) -> str:
        return f"DjangoCheckpointStore(alias={self.blobs.alias!r}, prefix={self.blobs.prefix!r})"


def signing_key() -> bytes:
    """``CHECKPOINT_SIGNING_KEY``, or the key derived from ``SECRET_KEY`` (module doc)."""
    explicit: Any = getattr(settings, "CHECKPOINT_SIGNING_KEY", None)
    if explicit:
        return explicit.encode() if isinstance(explicit, str) else bytes(explicit)
    return salted_hmac(
        SIGNING_KEY_SALT, "signing-key", secret=settings.SECRET_KEY, algorithm="sha256"
    ).digest()


def build_manager() -> StateCheckpointManager:
    """A manager over ``DjangoCheckpointStore`` configured from settings (no I/O).

    Raises:
        ImproperlyConfigured: an invalid ``CHECKPOINT_*`` setting.
    """
    try:
        return StateCheckpointManager(
            compression=getattr(settings, "CHECKPOINT_COMPRESSION", DEFAULT_CODEC),
            signing_key=signing_key(),
            store=DjangoCheckpointStore(
                alias=getattr(settings, "CHECKPOINT_STORAGE", "default"),
                prefix=getattr(settings, "CHECKPOINT_STORAGE_PREFIX", "checkpoints"),
            ),
        )
    except ResilienceError as exc:
        raise ImproperlyConfigured(f"CHECKPOINT_* settings: {exc}") from exc


_lock = threading.Lock()
_manager: StateCheckpointManager | None = None


def get_manager() -> StateCheckpointManager:
    """The Django-backed manager the dashboard uses (built once from settings).

    The admin, services and commands use it even if another process default was
    installed, so they always act on the ``Checkpoint`` rows.
    """
    global _manager
    with _lock:
        if _manager is None:
            _manager = build_manager()
        return _manager


def get_store() -> DjangoCheckpointStore:
    """The store of :func:`get_manager`."""
    return cast(DjangoCheckpointStore, get_manager().store)


def install() -> None:
    """Make the Django-backed manager the process-wide default ``checkpoint_manager``."""
    set_default_checkpoint_manager(get_manager())


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Tests override SECRET_KEY / CHECKPOINT_*: rebuild, and follow as the default if
    # ours was the default (a manager someone else installed is left alone).
    global _manager
    if setting not in _SETTINGS:
        return
    with _lock:
        old, _manager = _manager, None
    new = get_manager()
    previous = set_default_checkpoint_manager(new)
    if previous is not old:
        set_default_checkpoint_manager(previous)


def _delete_blob_after_commit(
    sender: type[Checkpoint], instance: Checkpoint, using: str, **kwargs: Any
) -> None:
    # Safety net for any ORM delete (queryset.delete(), cascades): the blob goes once the
    # row's deletion is committed, so a rollback never leaves a row without its blob.
    if _blobs_handled.get():
        return
    transaction.on_commit(
        partial(get_store().delete_blob, instance.checkpoint_id), using=using, robust=True
    )


def connect_signals() -> None:
    post_delete.connect(
        _delete_blob_after_commit, sender=Checkpoint, dispatch_uid="checkpoint_blob_cleanup"
    )
    setting_changed.connect(_on_setting_changed, dispatch_uid="checkpoint_settings_changed")


def delete_blobs_after_commit(checkpoint_ids: Iterable[str]) -> None:
    """Delete these blobs when the current transaction commits (at once outside one)."""
    ids = list(checkpoint_ids)

    def run() -> None:
        store = get_store()
        for checkpoint_id in ids:
            store.delete_blob(checkpoint_id)

    if ids:
        transaction.on_commit(run, robust=True)


@contextlib.contextmanager
def blobs_handled() -> Iterator[None]:
    """Within this block, ORM deletes of checkpoints leave blob removal to the caller."""
    token = _blobs_handled.set(True)
    try:
        yield
    finally:
        _blobs_handled.reset(token)
