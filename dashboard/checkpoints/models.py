from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from resilience.checkpoint import CHECKPOINT_ID_PATTERN, CODECS, NAME_PATTERN, CheckpointRecord
from resilience.checkpoint.compression import CODEC_NAME_MAX_LENGTH

CHECKPOINT_ID_LENGTH = 30  # "ck_" + 14 hex + "_" + 12 hex
NAME_MAX_LENGTH = 128

validate_checkpoint_id = RegexValidator(
    rf"\A(?:{CHECKPOINT_ID_PATTERN.pattern})\Z",
    "Enter a checkpoint id like ck_<14 hex>_<12 hex>.",
)
validate_name = RegexValidator(
    rf"\A(?:{NAME_PATTERN.pattern})\Z",
    "Enter 1-128 letters, digits or _.:@- starting with a letter or digit.",
)


def codec_choices() -> list[tuple[str, str]]:
    """The registered codecs (``resilience.checkpoint.CODECS``), read when asked: a codec
    registered after startup appears in the admin's filter without a migration."""
    return [(codec.name, codec.name) for codec in CODECS]


class Checkpoint(models.Model):
    """Index record of one checkpoint; its blob lives in Django storage at ``storage_path``.

    Rows are written by the checkpoint manager (through ``DjangoCheckpointStore``), never
    edited. ``created_ts`` keeps the manager's exact float timestamp so a record read
    back equals the blob's header (``verify_checkpoint`` compares them);
    ``created_at`` is the same instant as a datetime, for filtering and display.
    """

    checkpoint_id = models.CharField(
        primary_key=True,
        max_length=CHECKPOINT_ID_LENGTH,
        validators=[validate_checkpoint_id],
        help_text="ck_, a microsecond tick, _, random hex: sorts by save time",
    )
    agent_id = models.CharField(max_length=NAME_MAX_LENGTH, validators=[validate_name])
    workflow_id = models.CharField(max_length=NAME_MAX_LENGTH, validators=[validate_name])
    created_at = models.DateTimeField(db_index=True)
    created_ts = models.FloatField(
        "created (epoch seconds)", help_text="exact value saved in the blob header"
    )
    raw_size = models.PositiveBigIntegerField(help_text="bytes of JSON state")
    stored_size = models.PositiveBigIntegerField(help_text="bytes of compressed payload")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the compressed payload")
    codec = models.CharField(max_length=CODEC_NAME_MAX_LENGTH, choices=codec_choices)
    metadata = models.JSONField(default=dict, blank=True)
    storage_path = models.CharField(max_length=255, help_text="blob name in Django storage")
    seq = models.BigIntegerField(
        "save order",
        unique=True,
        null=True,
        editable=False,
        help_text="assigned when the row is first added: the newest has the highest",
    )

    class Meta:
        ordering = ["-checkpoint_id"]
        indexes = [
            models.Index(
                fields=["agent_id", "workflow_id", "-checkpoint_id"], name="checkpoint_group_recent"
            ),
            models.Index(fields=["workflow_id", "-checkpoint_id"], name="checkpoint_wf_recent"),
            # The timeline's agent picker reads a workflow's agents from this index alone.
            models.Index(fields=["workflow_id", "agent_id"], name="checkpoint_wf_agent"),
        ]
        permissions = [
            ("resume_checkpoint", "Can re-run a workflow from a chosen checkpoint"),
            ("fork_checkpoint", "Can fork a checkpoint into a new workflow"),
        ]

    def __str__(self) -> str:
        return self.checkpoint_id

    @property
    def ratio(self) -> float:
        """Compression ratio ``raw_size / stored_size`` (higher is better; 1.0 if empty)."""
        return self.raw_size / self.stored_size if self.stored_size else 1.0

    def to_record(self) -> CheckpointRecord:
        return CheckpointRecord(
            checkpoint_id=self.checkpoint_id,
            agent_id=self.agent_id,
            workflow_id=self.workflow_id,
            created_at=self.created_ts,
            raw_size=self.raw_size,
            stored_size=self.stored_size,
            sha256=self.sha256,
            codec=self.codec,
            metadata=dict(self.metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manager's info dict (``get_checkpoint_info``), for the API."""
        return self.to_record().to_dict()

    @classmethod
    def fields_from_record(cls, record: CheckpointRecord, *, storage_path: str) -> dict[str, Any]:
        """Column values (except the primary key) for ``record``."""
        return {
            "agent_id": record.agent_id,
            "workflow_id": record.workflow_id,
            "created_at": datetime.fromtimestamp(record.created_at, tz=UTC),
            "created_ts": record.created_at,
            "raw_size": record.raw_size,
            "stored_size": record.stored_size,
            "sha256": record.sha256,
            "codec": record.codec,
            "metadata": record.metadata,
            "storage_path": storage_path,
        }


class CheckpointFork(models.Model):
    """Lineage of a forked workflow: which checkpoint of which workflow it was copied from.

    Ids are kept as text, not foreign keys: the lineage outlives a cleanup of either
    side's checkpoints (a page shows a removed checkpoint as gone).
    """

    workflow_id = models.CharField(
        max_length=NAME_MAX_LENGTH, unique=True, validators=[validate_name], help_text="the fork"
    )
    agent_id = models.CharField(max_length=NAME_MAX_LENGTH, validators=[validate_name])
    checkpoint_id = models.CharField(
        max_length=CHECKPOINT_ID_LENGTH, help_text="the fork's first checkpoint (a new blob)"
    )
    parent_workflow_id = models.CharField(max_length=NAME_MAX_LENGTH, validators=[validate_name])
    parent_checkpoint_id = models.CharField(max_length=CHECKPOINT_ID_LENGTH)
    edited = models.BooleanField(default=False, help_text="the state was edited before saving")
    edited_paths = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["parent_workflow_id", "-created_at"], name="fork_parent_workflow"),
            models.Index(fields=["parent_checkpoint_id"], name="fork_parent_checkpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} <- {self.parent_workflow_id}@{self.parent_checkpoint_id}"
