"""The self-describing blob format: everything needed to verify and re-index a checkpoint.

Layout (integers big-endian)::

    offset  size  field
    0       4     magic b"RSCK"
    4       1     format version (1)
    5       1     flags: bit 0 set = an HMAC follows
    6       4     header length H
    10      32    SHA-256 of the header bytes
    42      32    HMAC-SHA256(key, bytes 0..9 + header)   only when flag bit 0 is set
    ..      H     header: a JSON object (checkpoint_id, agent_id, workflow_id,
                  created_at, codec, raw_size, stored_size, sha256, metadata)
    ..      rest  payload: the compressed JSON state (``stored_size`` bytes)

The header's ``sha256`` is the SHA-256 of the payload. The HMAC covers the header, and
through its ``sha256`` the payload, so a blob rewritten with a fresh hash is detected
when a key is configured. :func:`unpack` checks all of this before any JSON is parsed
or any byte is decompressed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from typing import Any, Final

import orjson

from resilience.checkpoint._ids import CHECKPOINT_ID_PATTERN, NAME_PATTERN
from resilience.checkpoint.compression import CODECS
from resilience.checkpoint.store import CheckpointRecord
from resilience.errors import CheckpointCorruptedError

__all__ = ["FORMAT_VERSION", "MAGIC", "pack", "unpack"]

MAGIC: Final = b"RSCK"
FORMAT_VERSION: Final = 1
_FLAG_HMAC: Final = 0x01
_PREFIX: Final = struct.Struct(">4sBBI")
_DIGEST: Final = 32
_MAX_HEADER: Final = 16 * 1024 * 1024
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def pack(record: CheckpointRecord, payload: bytes, key: bytes | None) -> bytes:
    """Build a blob for ``record`` and its compressed ``payload``, signed when ``key``."""
    header = orjson.dumps(
        {
            "checkpoint_id": record.checkpoint_id,
            "agent_id": record.agent_id,
            "workflow_id": record.workflow_id,
            "created_at": record.created_at,
            "codec": record.codec,
            "raw_size": record.raw_size,
            "stored_size": record.stored_size,
            "sha256": record.sha256,
            "metadata": record.metadata,
        }
    )
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, _FLAG_HMAC if key else 0, len(header))
    parts = [prefix, hashlib.sha256(header).digest()]
    if key:
        parts.append(hmac.digest(key, prefix + header, "sha256"))  # one-shot: C fast path
    parts += [header, payload]
    return b"".join(parts)


def _corrupt(checkpoint_id: str, why: str) -> CheckpointCorruptedError:
    return CheckpointCorruptedError(f"checkpoint {checkpoint_id} failed verification: {why}")


def unpack(blob: bytes, *, checkpoint_id: str, key: bytes | None) -> tuple[CheckpointRecord, bytes]:
    """Verify ``blob`` and return its record and (still compressed) payload.

    Args:
        blob: the bytes read from the store.
        checkpoint_id: the id the blob was stored under; the header must agree.
        key: the signing key; when set, the blob must carry a valid HMAC. Without a
            key an HMAC present in the blob is not checked (there is nothing to check
            it with); the SHA-256 digests still are.

    Raises:
        CheckpointCorruptedError: anything does not verify.

    Returns:
        (record, payload); the payload's SHA-256 matches ``record.sha256``.
    """
    view = memoryview(blob)
    if len(view) < _PREFIX.size + _DIGEST:
        raise _corrupt(checkpoint_id, f"only {len(view)} bytes")
    magic, version, flags, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise _corrupt(checkpoint_id, "not a checkpoint blob (bad magic)")
    if version != FORMAT_VERSION:
        raise _corrupt(checkpoint_id, f"unsupported format version {version}")
    pos = _PREFIX.size
    header_digest = view[pos : pos + _DIGEST]
    pos += _DIGEST
    mac = None
    if flags & _FLAG_HMAC:
        mac = view[pos : pos + _DIGEST]
        pos += _DIGEST
    if header_len > _MAX_HEADER or pos + header_len > len(view):
        raise _corrupt(checkpoint_id, "truncated header")
    header = view[pos : pos + header_len]
    payload = view[pos + header_len :]
    if not hmac.compare_digest(hashlib.sha256(header).digest(), header_digest):
        raise _corrupt(checkpoint_id, "header SHA-256 mismatch")
    if key:
        if mac is None:
            raise _corrupt(checkpoint_id, "no HMAC but a signing key is configured")
        expected = hmac.digest(key, bytes(view[: _PREFIX.size]) + bytes(header), "sha256")
        if not hmac.compare_digest(expected, mac):
            raise _corrupt(checkpoint_id, "HMAC mismatch (wrong key or tampered blob)")
    try:
        fields = orjson.loads(header)
        record = _record(fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _corrupt(checkpoint_id, f"bad header: {exc}") from exc
    if record.checkpoint_id != checkpoint_id:
        raise _corrupt(checkpoint_id, f"header names another checkpoint {record.checkpoint_id}")
    if len(payload) != record.stored_size:
        raise _corrupt(
            checkpoint_id, f"payload is {len(payload)} bytes, header says {record.stored_size}"
        )
    if not hmac.compare_digest(hashlib.sha256(payload).hexdigest(), record.sha256):
        raise _corrupt(checkpoint_id, "payload SHA-256 mismatch")
    return record, payload.tobytes()


def _record(fields: Any) -> CheckpointRecord:
    if not isinstance(fields, dict):
        raise TypeError("header is not an object")
    record = CheckpointRecord(
        checkpoint_id=_typed(fields, "checkpoint_id", str),
        agent_id=_typed(fields, "agent_id", str),
        workflow_id=_typed(fields, "workflow_id", str),
        created_at=float(_typed(fields, "created_at", (int, float))),
        raw_size=_typed(fields, "raw_size", int),
        stored_size=_typed(fields, "stored_size", int),
        sha256=_typed(fields, "sha256", str),
        codec=_typed(fields, "codec", str),
        metadata=_typed(fields, "metadata", dict),
    )
    if CHECKPOINT_ID_PATTERN.fullmatch(record.checkpoint_id) is None:
        raise ValueError("malformed checkpoint_id")
    for name in (record.agent_id, record.workflow_id):
        if NAME_PATTERN.fullmatch(name) is None:
            raise ValueError(f"malformed name {name!r}")
    if _SHA256_HEX.fullmatch(record.sha256) is None:
        raise ValueError("malformed sha256")
    CODECS.get(record.codec)  # UnknownCodecError (a ValueError) lists the known codecs
    if record.raw_size < 0 or record.stored_size < 0:
        raise ValueError("negative size")
    return record


def _typed(fields: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} has type {type(value).__name__}")
    return value
